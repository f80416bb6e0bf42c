"""Every entry point writes exactly the audit rows it should: rows counted against requests.

API with a token and with a session, the admin and the preview view; successes, refusals before
the operation (credentials), refusals inside it (validation, access), HEAD and OPTIONS (none), and
a flood of unauthenticated requests (one row per address and minute, with the count).
"""

import uuid

import pytest
from django.contrib.auth.models import Permission
from pydicom.data import get_testdata_file
from rest_framework.test import APIClient

from audit.models import AuditLog, RefusalTally
from audit.services import flush_tallies

pytestmark = pytest.mark.django_db

CT_SMALL = get_testdata_file("CT_small.dcm")
MISSING = "00000000-0000-0000-0000-000000000000"


def _upload(client, **fields):
    with open(CT_SMALL, "rb") as handle:
        return client.post("/api/dicom/upload", {"file": handle, **fields}, format="multipart")


def _new_rows(before: int) -> list[tuple]:
    return list(
        AuditLog.objects.filter(id__gt=before)
        .order_by("id")
        .values_list("action", "success", "status_code", "username")
    )


def _last_id() -> int:
    return AuditLog.objects.order_by("-id").values_list("id", flat=True).first() or 0


@pytest.fixture
def session_api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def officer_client(client, django_user_model):
    officer = django_user_model.objects.create_user(
        username="officer", password="pw-officer-123", is_staff=True
    )
    for codename in ("view_dicomfile", "view_phi", "change_dicomfile"):
        officer.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(officer)
    return client


@pytest.mark.parametrize("client_name", ["api", "session_api"])
def test_each_api_request_writes_one_row_with_its_outcome(request, client_name):
    client = request.getfixturevalue(client_name)
    before = _last_id()
    file_id = _upload(client).json()["file_id"]
    calls = [
        (lambda: client.get(f"/api/dicom/metadata/{file_id}"), ("metadata", True, 200)),
        (lambda: client.get(f"/api/dicom/status/{file_id}"), ("status", True, 200)),
        (lambda: client.get(f"/api/dicom/download/{file_id}"), ("download", True, 200)),
        (lambda: client.post(f"/api/dicom/anonymize/{file_id}"), ("anonymize", True, 200)),
        (lambda: client.get(f"/api/dicom/metadata/{MISSING}"), ("metadata", False, 404)),
        (lambda: client.get("/api/dicom/status/not-a-uuid"), ("status", False, 404)),
        (lambda: client.post(f"/api/dicom/anonymize/{file_id}", {"nope": "1"}), ("anonymize", False, 400)),
        (lambda: _upload(client, anonymize="maybe"), ("upload", False, 400)),
        (lambda: client.post("/api/dicom/upload", {}), ("upload", False, 400)),
    ]
    for call, expected in calls:
        start = _last_id()
        call()
        assert [row[:3] for row in _new_rows(start)] == [expected], expected
    rows = _new_rows(before)
    assert len(rows) == 1 + len(calls)
    assert {row[3] for row in rows} == {"alice"}


def test_head_and_options_write_no_row(api):
    file_id = _upload(api).json()["file_id"]
    start = _last_id()
    for path in (
        f"/api/dicom/metadata/{file_id}",
        f"/api/dicom/download/{file_id}",
        f"/api/dicom/status/{MISSING}",
    ):
        assert api.head(path).status_code in (200, 404)
        assert api.options(path).status_code in (200, 405)
    assert _new_rows(start) == []


def test_a_flood_of_unauthenticated_requests_is_one_row_per_address_and_minute(client):
    for index in range(60):
        headers = {"HTTP_AUTHORIZATION": "Token not-a-key"} if index % 2 else {}
        assert client.get(f"/api/dicom/metadata/{uuid.uuid4()}", **headers).status_code == 401
    assert client.get(f"/api/dicom/status/{MISSING}", REMOTE_ADDR="10.2.3.4").status_code == 401
    assert AuditLog.objects.count() == 0
    assert flush_tallies(everything=True) == 2
    rows = {(row.client_address, row.action): row.count for row in AuditLog.objects.all()}
    assert rows == {("127.0.0.1", "metadata"): 60, ("10.2.3.4", "status"): 1}
    assert RefusalTally.objects.count() == 0


def test_a_refused_token_of_a_known_user_is_that_users_row(api, user):
    user.is_active = False
    user.save()
    start = _last_id()
    assert api.get(f"/api/dicom/status/{MISSING}").status_code == 401
    assert _new_rows(start) == [("status", False, 401, "alice")]


def test_admin_and_preview_requests_write_one_row_each(api, officer_client):
    file_id = _upload(api).json()["file_id"]
    calls = [
        (f"/admin/dicom/dicomfile/{file_id}/change/", 200, ("view", True, 200)),
        (f"/admin/dicom/dicomfile/{file_id}/download/", 200, ("download", True, 200)),
        (f"/dicom/files/{file_id}/preview/full.png", 200, ("preview", True, 200)),
        (f"/dicom/files/{MISSING}/preview/full.png", 404, ("preview", False, 404)),
        (f"/admin/dicom/dicomfile/{MISSING}/download/", 404, ("download", False, 404)),
    ]
    for path, status, expected in calls:
        start = _last_id()
        assert officer_client.get(path).status_code == status, path
        assert [row[:3] for row in _new_rows(start)] == [expected], path
        assert _new_rows(start)[0][3] == "officer"
