"""While the database cannot be reached, requests answer 503 with a detail and Retry-After, never 500."""

import socket

import pytest
from django.db import connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The test database of SQLite lives in memory: closing its connection to point it elsewhere
    # would drop it. make test runs these on PostgreSQL.
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a database server to lose"),
]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens on it once the probe is closed


@pytest.fixture
def database_away():
    """The default connection pointed at a database that is not there (a real failed connect)."""
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(_closed_port()))
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/dicom/status/00000000-0000-0000-0000-000000000000"),
        ("get", "/api/dicom/metadata/00000000-0000-0000-0000-000000000000"),
        ("post", "/api/dicom/anonymize/00000000-0000-0000-0000-000000000000"),
        ("post", "/api/dicom/upload"),
    ],
)
def test_the_api_answers_503_with_a_detail(client, database_away, method, path):
    response = getattr(client, method)(
        path, HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567"
    )
    assert response.status_code == 503
    assert response.json() == {"detail": "the database is unavailable: try again shortly"}
    assert response["Retry-After"] == "5"


def test_the_admin_answers_503_too(client, database_away):
    client.raise_request_exception = False
    client.cookies["sessionid"] = "a" * 32
    response = client.get("/admin/dicom/dicomfile/")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the database is unavailable")
