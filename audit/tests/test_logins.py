"""Admin logins, logouts and failed logins are audited; deleting a user changes no audit row."""

import pytest

from audit.models import AuditLog
from audit.services import Actor, flush_tallies, record_event

pytestmark = pytest.mark.django_db


def test_an_admin_login_a_failed_one_and_a_logout_each_write_one_row(client, staff_user):
    refused = client.post(
        "/admin/login/", {"username": "staff", "password": "Doe^Jane typed here", "next": "/admin/"}
    )
    assert refused.status_code == 200  # the form again, with its error
    # Failed logins are tallied per address and minute; the minute's row is written once it is over.
    assert not AuditLog.objects.filter(action=AuditLog.Action.LOGIN_FAILED).exists()
    assert flush_tallies(everything=True) == 1
    failed = AuditLog.objects.get(action=AuditLog.Action.LOGIN_FAILED)
    assert failed.success is False and failed.username == "" and failed.user_id is None
    assert failed.count == 1 and failed.client_address == "127.0.0.1"
    assert "Doe" not in failed.reason and "staff" not in failed.reason

    assert (
        client.post(
            "/admin/login/", {"username": "staff", "password": "staff-password-123", "next": "/admin/"}
        ).status_code
        == 302
    )
    login = AuditLog.objects.get(action=AuditLog.Action.LOGIN)
    assert login.success and login.username == "staff" and login.user_id == staff_user.id

    assert client.post("/admin/logout/").status_code in (200, 302)
    assert AuditLog.objects.filter(action=AuditLog.Action.LOGOUT, username="staff").count() == 1
    assert list(AuditLog.objects.order_by("id").values_list("action", flat=True)) == [
        "login_failed",
        "login",
        "logout",
    ]


def test_deleting_a_user_changes_no_audit_row(user):
    row = record_event(actor=Actor(user=user), action=AuditLog.Action.STATUS, success=True)
    before = AuditLog.objects.values().get(pk=row.pk)
    user_id = user.id
    user.delete()
    after = AuditLog.objects.values().get(pk=row.pk)
    assert after == before and after["user_id"] == user_id and after["username"] == "alice"
