"""The audit trail in the admin: read-only for everyone, filters, CSV export of the filtered rows."""

import csv
import io
import uuid

import pytest
from django.test import Client

from audit.models import AuditLog
from audit.services import Actor, record_event

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/audit/auditlog/"


@pytest.fixture
def superuser_client(django_user_model) -> Client:
    django_user_model.objects.create_superuser(username="root", password="root-password-123")
    client = Client()
    assert client.login(username="root", password="root-password-123")
    return client


@pytest.fixture
def rows(user, other_user):
    file_id = uuid.uuid4()
    record_event(
        actor=Actor(user=user), action=AuditLog.Action.UPLOAD, success=True, file_id=file_id, status_code=200
    )
    record_event(
        actor=Actor(user=user),
        action=AuditLog.Action.DOWNLOAD,
        success=False,
        status_code=409,
        reason="=cmd|x",
    )
    record_event(actor=Actor(user=other_user), action=AuditLog.Action.UPLOAD, success=False, status_code=400)
    return file_id


def export(client, **params) -> list[list[str]]:
    response = client.get(f"{CHANGELIST}export.csv", params)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="audit-trail.csv"' in response["Content-Disposition"]
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_read_only_even_for_superusers(superuser_client, rows):
    row = AuditLog.objects.first()
    assert superuser_client.get(f"{CHANGELIST}add/").status_code == 403
    assert superuser_client.get(f"{CHANGELIST}{row.pk}/delete/").status_code == 403
    assert (
        superuser_client.post(f"{CHANGELIST}{row.pk}/change/", {"action": "job", "success": "on"}).status_code
        == 403
    )
    page = superuser_client.get(f"{CHANGELIST}{row.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    listing = superuser_client.get(CHANGELIST)
    assert b"delete_selected" not in listing.content
    assert b"Export CSV" in listing.content
    # The three rows of the fixture, and the superuser's login: nothing written by looking.
    assert AuditLog.objects.exclude(action=AuditLog.Action.LOGIN).count() == 3


def test_filters_by_action_user_success_and_date(superuser_client, rows, user):
    response = superuser_client.get(CHANGELIST, {"action__exact": "upload", "success__exact": "0"})
    assert [r.username for r in response.context["cl"].result_list] == ["bob"]
    response = superuser_client.get(CHANGELIST, {"user__id__exact": str(user.pk)})
    assert {r.username for r in response.context["cl"].result_list} == {"alice"}
    filters = {spec.title for spec in response.context["cl"].filter_specs}
    assert {"action", "success", "user", "timestamp"} <= filters


def test_csv_export_has_exactly_the_filtered_rows_and_is_audited(superuser_client, rows):
    exported = export(superuser_client, action__exact="upload")
    assert exported[0] == [
        "timestamp",
        "username",
        "action",
        "success",
        "status_code",
        "file_id",
        "client_address",
        "reason",
        "request_id",
        "count",
        "targets",
    ]
    assert sorted((r[1], r[3]) for r in exported[1:]) == [("alice", "True"), ("bob", "False")]
    assert str(rows) in {r[5] for r in exported[1:]}
    export_row = AuditLog.objects.get(username="root", action=AuditLog.Action.EXPORT)
    assert export_row.action == "export" and export_row.reason == "audit trail CSV export of 2 rows"


def test_csv_export_neutralises_formulas(superuser_client, rows):
    exported = export(superuser_client, action__exact="download")
    assert [r[7] for r in exported[1:]] == ["'=cmd|x"]


def test_staff_without_audit_permission_cannot_export(client, django_user_model, rows):
    django_user_model.objects.create_user(username="nobody", password="nobody-password-1", is_staff=True)
    assert client.login(username="nobody", password="nobody-password-1")
    assert client.get(f"{CHANGELIST}export.csv").status_code == 403
    assert client.get(CHANGELIST).status_code == 403
