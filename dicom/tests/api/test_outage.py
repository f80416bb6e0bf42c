"""While the database cannot be reached, requests answer 503 with a detail and Retry-After, never 500."""

import io
import json
import socket

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from dicom.api import direct
from dicom.api.authentication import clear_token_cache
from dicom.tests.factories import UserFactory

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


def _direct_scope(path: str, key: str) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"authorization", f"Token {key}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


def test_the_direct_path_leaves_a_token_it_cannot_look_up_to_the_usual_way(database_away):
    """The usual way answers it 503 with Retry-After (above); the direct path must not answer 500."""
    clear_token_cache()
    scope = _direct_scope(
        "/api/dicom/status/00000000-0000-0000-0000-000000000000", "0123456789abcdef0123456789abcdef01234567"
    )
    assert direct.respond(scope, io.BytesIO()) is None


def test_the_direct_path_answers_503_when_the_database_goes_after_the_token_was_cached(transactional_db):
    clear_token_cache()
    key = Token.objects.create(user=UserFactory()).key
    path = "/api/dicom/metadata/00000000-0000-0000-0000-000000000000"
    assert direct.respond(_direct_scope(path, key), io.BytesIO()).status_code == 404  # cached now
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(_closed_port()))
    try:
        response = direct.respond(_direct_scope(path, key), io.BytesIO())
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
        clear_token_cache()
    assert response.status_code == 503
    assert json.loads(response.content) == {"detail": "the database is unavailable: try again shortly"}
    assert response["Retry-After"] == "5"
