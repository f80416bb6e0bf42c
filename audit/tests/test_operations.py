"""``audit.services.operation``: one row per operation, success with the caller's commit, failure
after its rollback; joined when nested; unauthenticated refusals tallied per address and minute."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.utils import timezone

from audit.models import AuditLog, RefusalTally
from audit.services import Actor, flush_tallies, operation, refused, tally_refusal
from dicom.services.errors import FileNotFoundInServiceError

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


def _rows():
    return list(AuditLog.objects.order_by("id").values_list("action", "success", "status_code", "reason"))


def test_an_operation_that_changes_nothing_writes_its_success_row_when_it_ends(user):
    with operation(actor=Actor(user=user), action=AuditLog.Action.METADATA, file_id=None) as op:
        assert AuditLog.objects.count() == 0
        op.reason = "read"
    assert _rows() == [("metadata", True, 200, "read")]


def test_success_commits_with_the_change_and_a_failure_survives_the_rollback(user, other_user):
    with operation(actor=Actor(user=user), action=AuditLog.Action.UPLOAD) as op, transaction.atomic():
        other_user.first_name = "changed"
        other_user.save()
        op.succeed(reason="stored")
    assert _rows() == [("upload", True, 200, "stored")]

    with (
        pytest.raises(FileNotFoundInServiceError),
        operation(actor=Actor(user=user), action=AuditLog.Action.UPLOAD) as op,
        transaction.atomic(),
    ):
        other_user.first_name = "rolled back"
        other_user.save()
        op.succeed(reason="stored")  # written, then rolled back with the change
        raise FileNotFoundInServiceError("file not found")
    other_user.refresh_from_db()
    assert other_user.first_name == "changed"
    assert _rows() == [("upload", True, 200, "stored"), ("upload", False, 404, "file not found")]


def test_a_bug_is_a_failure_whose_reason_names_the_error_class_never_its_message(user):
    with pytest.raises(KeyError), operation(actor=Actor(user=user), action=AuditLog.Action.DOWNLOAD):
        raise KeyError("Doe^Jane")
    assert _rows() == [("download", False, 500, "internal error (KeyError)")]


def test_nested_operations_of_one_action_write_one_row_and_others_their_own(user):
    actor = Actor(user=user)
    with operation(actor=actor, action=AuditLog.Action.ANONYMIZE) as outer:
        with operation(actor=actor, action=AuditLog.Action.ANONYMIZE, file_id=user_file_id) as inner:
            assert inner is outer
            inner.reason = "queued"
        with operation(actor=actor, action=AuditLog.Action.JOB):
            pass
    assert AuditLog.objects.filter(action="anonymize").get().file_id is not None
    assert [row[0] for row in _rows()] == ["job", "anonymize"]

    with (
        pytest.raises(Boom),
        operation(actor=actor, action=AuditLog.Action.STATUS),
        operation(actor=actor, action=AuditLog.Action.STATUS),
    ):
        raise Boom
    assert AuditLog.objects.filter(action="status").count() == 1


user_file_id = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


def test_refuse_writes_a_failure_and_discard_writes_nothing(user):
    with operation(actor=Actor(user=user), action=AuditLog.Action.PREVIEW) as op:
        op.discard()
    with operation(actor=Actor(user=user), action=AuditLog.Action.DOWNLOAD) as op:
        op.refuse(status_code=403, reason="needs dicom.view_phi")
    assert _rows() == [("download", False, 403, "needs dicom.view_phi")]


def test_unauthenticated_refusals_are_one_row_per_address_and_minute_with_a_count():
    start = timezone.now().replace(second=5, microsecond=0)
    for address, n in (("10.0.0.1", 40), ("10.0.0.2", 3)):
        for i in range(n):
            tally_refusal(
                actor=Actor(user=AnonymousUser(), client_address=address),
                action=AuditLog.Action.METADATA,
                status_code=401,
                reason="Authentication credentials were not provided.",
                now=start + timedelta(seconds=i % 50),
            )
    assert AuditLog.objects.count() == 0 and RefusalTally.objects.count() == 2
    # The next minute's first refusal writes the rows of the minute that is over.
    tally_refusal(
        actor=Actor(user=None, client_address="10.0.0.1"),
        action=AuditLog.Action.METADATA,
        status_code=401,
        reason="Authentication credentials were not provided.",
        now=start + timedelta(minutes=1),
    )
    rows = {row.client_address: row for row in AuditLog.objects.all()}
    assert set(rows) == {"10.0.0.1", "10.0.0.2"}
    assert rows["10.0.0.1"].count == 40 and rows["10.0.0.2"].count == 3
    assert rows["10.0.0.1"].success is False and rows["10.0.0.1"].user_id is None
    assert rows["10.0.0.1"].timestamp == start.replace(second=0)
    assert rows["10.0.0.1"].reason.startswith("40 unauthenticated requests refused from")
    assert RefusalTally.objects.get().count == 1
    # Nothing more for minutes still under way; everything with ``everything``.
    assert flush_tallies(now=start + timedelta(minutes=1)) == 0
    assert flush_tallies(everything=True) == 1
    assert AuditLog.objects.count() == 3 and RefusalTally.objects.count() == 0


def test_a_refusal_of_an_authenticated_user_is_its_own_row(user):
    refused(
        actor=Actor(user=user),
        action=AuditLog.Action.STATUS,
        error=FileNotFoundInServiceError("file not found"),
    )
    assert _rows() == [("status", False, 404, "file not found")]
    assert RefusalTally.objects.count() == 0
