"""The direct path for plain reads (``dicom.api.direct``): what it takes, and that it answers as DRF does.

The parity tests run the production server (``scripts/run.sh``) and send each read twice over a real
socket: plainly (the direct path) and with an ``Accept`` the direct path leaves to DRF's content
negotiation (the usual way). Status, body, header names, header values and the audit row must match.
"""

import io
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from pydicom.data import get_testdata_file
from rest_framework.authtoken.models import Token

from audit.models import AuditLog
from dicom.api import direct
from dicom.api.authentication import clear_token_cache
from dicom.api.views import DicomViewSet
from dicom.tests.conftest import embedded_service
from dicom.tests.factories import DicomFileFactory, UserFactory

CT_SMALL = Path(get_testdata_file("CT_small.dcm")).read_bytes()
# Acceptable to DRF (JSON), but not one of the plain values the direct path takes.
THROUGH_DRF = "application/json, */*;q=0.5"


def _scope(path: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


def _respond(scope, body=b""):
    return direct.respond(scope, io.BytesIO(body))


@pytest.fixture
def token():
    clear_token_cache()
    yield Token.objects.create(user=UserFactory())
    clear_token_cache()


def _plain_headers(token, **more) -> dict[str, str]:
    return {"Host": "localhost", "Authorization": f"Token {token.key}", **more}


@pytest.mark.django_db
def test_a_plain_token_read_is_answered_directly_and_audited_once(token):
    dicom_file = DicomFileFactory(owner=token.user, metadata={"modality": "CT"})
    response = _respond(_scope(f"/api/dicom/status/{dicom_file.pk}", headers=_plain_headers(token)))
    assert response is not None
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["X-Request-ID"]
    row = AuditLog.objects.get()
    assert (row.action, row.success, row.status_code, row.file_id) == ("status", True, 200, dicom_file.pk)
    assert str(row.request_id) == response["X-Request-ID"]


@pytest.mark.django_db
def test_a_missing_file_is_the_apis_404_and_its_refusal_is_audited(token):
    response = _respond(_scope(f"/api/dicom/metadata/{uuid.uuid4()}/", headers=_plain_headers(token)))
    assert response.status_code == 404
    assert response.content == b'{"detail":"file not found"}'
    row = AuditLog.objects.get()
    assert (row.action, row.success, row.status_code) == ("metadata", False, 404)


@pytest.mark.django_db
def test_an_original_downloaded_by_staff_without_the_patient_data_permission_is_403(token):
    token.user.is_staff = True
    token.user.save()
    clear_token_cache()
    original = DicomFileFactory(owner=UserFactory(), anonymized=False)
    response = _respond(_scope(f"/api/dicom/download/{original.pk}", headers=_plain_headers(token)))
    assert response.status_code == 403
    assert json.loads(response.content)["detail"].startswith("this file is an original with patient data")
    row = AuditLog.objects.get()
    assert (row.action, row.success, row.status_code) == ("download", False, 403)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        {"method": "HEAD"},
        {"method": "POST"},
        {"path": "/api/dicom/anonymize/{id}"},
        {"path": "/api/dicom/status/{id}/extra"},
        {"path": "/dicomweb/studies"},
        {"headers": {"Authorization": None}},
        {"headers": {"Authorization": "Bearer {key}"}},
        {"headers": {"Authorization": "Token"}},
        {"headers": {"Authorization": "Token not-a-real-key"}},
        {"headers": {"Authorization": "Token {key} extra"}},
        {"headers": {"Accept": "text/html"}},
        {"headers": {"Accept": THROUGH_DRF}},
        {"headers": {"Host": "evil.example"}},
    ],
    ids=lambda change: repr(change),
)
def test_anything_but_a_plain_read_goes_the_usual_way(token, change):
    dicom_file = DicomFileFactory(owner=token.user)
    headers = _plain_headers(token)
    for name, value in change.get("headers", {}).items():
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value.format(key=token.key)
    path = change.get("path", "/api/dicom/status/{id}").format(id=dicom_file.pk)
    scope = _scope(path, method=change.get("method", "GET"), headers=headers)
    assert _respond(scope) is None
    assert not AuditLog.objects.exists()  # nothing done: the usual way audits what it answers


@pytest.mark.django_db
def test_a_deactivated_users_token_goes_the_usual_way_to_be_refused_there(token):
    token.user.is_active = False
    token.user.save()
    dicom_file = DicomFileFactory(owner=token.user)
    assert _respond(_scope(f"/api/dicom/status/{dicom_file.pk}", headers=_plain_headers(token))) is None


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True)
def test_a_plain_http_read_due_an_https_redirect_goes_the_usual_way(token):
    dicom_file = DicomFileFactory(owner=token.user)
    assert _respond(_scope(f"/api/dicom/status/{dicom_file.pk}", headers=_plain_headers(token))) is None


def test_the_middleware_chain_is_the_one_the_direct_path_was_written_for():
    """A middleware added to the settings is skipped by the direct path: look at it, then add it here."""
    assert tuple(settings.MIDDLEWARE) == direct.MIDDLEWARE_WRITTEN_FOR


def test_the_apis_authentication_permissions_and_throttles_are_the_ones_the_direct_path_was_written_for():
    """A throttle or permission the API gains would not apply to the direct path until it is added there."""
    names = {
        kind: tuple(cls.__name__ for cls in getattr(DicomViewSet, f"{kind}_classes"))
        for kind in ("authentication", "permission", "throttle")
    }
    assert names == direct.REST_FRAMEWORK_WRITTEN_FOR


# --- parity over real sockets, with the production server --------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("direct")
    with embedded_service(tmp_path) as live:
        yield live, tmp_path / "data" / "db.sqlite3"


def _get(live, path: str, accept: str | None = None):
    conn = live.connection()
    headers = {"Authorization": f"Token {live.token}"}
    if accept is not None:
        headers["Accept"] = accept
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return response.status, headers, body


def _audit_row(database: Path, request_id: str) -> tuple:
    with sqlite3.connect(database) as db:
        return db.execute(
            "SELECT action, success, status_code, file_id, reason FROM audit_auditlog WHERE request_id = ?",
            [uuid.UUID(request_id).hex],
        ).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [
        "/api/dicom/metadata/{id}",
        "/api/dicom/metadata/{id}/",
        "/api/dicom/status/{id}",
        "/api/dicom/download/{id}",
        "/api/dicom/metadata/00000000-0000-4000-8000-000000000000",
        "/api/dicom/download/not-a-uuid",
        "/api/dicom/status/not-a-uuid/",
    ],
)
def test_the_direct_path_answers_byte_for_byte_what_drf_answers(server, path):
    live, database = server
    status, body = live.request("POST", "/api/dicom/upload", CT_SMALL, {"Content-Type": "application/dicom"})
    assert status == 200, body
    file_id = json.loads(body)["file_id"]
    path = path.format(id=file_id)

    direct_answer = _get(live, path)
    drf_answer = _get(live, path, accept=THROUGH_DRF)

    assert direct_answer[0] == drf_answer[0]
    assert direct_answer[2] == drf_answer[2]
    varying = {"date", "x-request-id"}
    assert {k: v for k, v in direct_answer[1].items() if k not in varying} == {
        k: v for k, v in drf_answer[1].items() if k not in varying
    }
    rows = [_audit_row(database, answer[1]["x-request-id"]) for answer in (direct_answer, drf_answer)]
    assert len(rows[0]) == 1
    assert rows[0] == rows[1]


def _post(live, path: str, body: bytes, accept: str | None = None):
    conn = live.connection()
    headers = {"Authorization": f"Token {live.token}", "Content-Type": "application/dicom"}
    if accept is not None:
        headers["Accept"] = accept
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {name.lower(): value for name, value in response.getheaders()}, data


@pytest.mark.slow
@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("", CT_SMALL),
        ("/?anonymize=true&accept_burned_in_annotation=true", CT_SMALL),
        ("?anonymize=maybe", CT_SMALL),
        ("?unknown=1", CT_SMALL),
        ("", b"not a DICOM file"),
        ("", b""),
    ],
    ids=["stored", "anonymized", "bad-option", "unknown-field", "not-dicom", "empty"],
)
def test_a_raw_upload_the_direct_path_takes_is_answered_and_audited_as_drf_does(server, query, body):
    live, database = server
    direct_answer = _post(live, "/api/dicom/upload" + query, body)
    drf_answer = _post(live, "/api/dicom/upload" + query, body, accept=THROUGH_DRF)

    assert direct_answer[0] == drf_answer[0]
    varying = {"date", "x-request-id", "content-length"}
    assert {k: v for k, v in direct_answer[1].items() if k not in varying} == {
        k: v for k, v in drf_answer[1].items() if k not in varying
    }
    answers = [json.loads(answer[2]) for answer in (direct_answer, drf_answer)]
    rows = [_audit_row(database, answer[1]["x-request-id"]) for answer in (direct_answer, drf_answer)]
    assert len(rows[0]) == 1
    if direct_answer[0] == 200:
        file_ids = [answer.pop("file_id") for answer in answers]
        assert file_ids == [answer["metadata"].pop("file_id") for answer in answers]
        assert [row[0][3] for row in rows] == [uuid.UUID(file_id).hex for file_id in file_ids]
        rows = [[row[0][:3] + row[0][4:]] for row in rows]
    assert answers[0] == answers[1]
    assert rows[0] == rows[1]
