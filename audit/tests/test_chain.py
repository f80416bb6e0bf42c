"""The hash chain: every row verifies, an edit or a deletion made around the trigger is named by
``verify_audit``, the trigger refuses UPDATE, DELETE and TRUNCATE, and concurrent writers keep one chain."""

import itertools
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from audit import chain
from audit.models import AuditLog
from audit.services import Actor, operation, record_event, record_many
from audit.services import entry as audit_entry

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")


def _write_rows(user, n: int) -> list[AuditLog]:
    return [
        record_event(
            actor=Actor(user=user, client_address="10.0.0.1"), action=AuditLog.Action.STATUS, success=True
        )
        for _ in range(n)
    ]


def _verify(*anchors: str) -> str:
    out = StringIO()
    call_command("verify_audit", *[f"--anchor={anchor}" for anchor in anchors], stdout=out)
    return out.getvalue()


def _verify_fails(*anchors: str) -> str:
    with pytest.raises(CommandError) as refused:
        _verify(*anchors)
    assert refused.value.returncode == 1
    return str(refused.value)


@pytest.fixture
def trigger_bypassed():
    """Act as someone with the database's superuser rights, on purpose: skip the trigger."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
    yield
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = origin")


def test_rows_written_every_way_form_one_chain_that_verifies(user):
    first = record_event(actor=Actor(user=user), action=AuditLog.Action.LOGIN, success=True)
    with operation(actor=Actor(user=user), action=AuditLog.Action.METADATA, file_id=None):
        pass
    record_many(
        audit_entry(actor=Actor(user=user), action=AuditLog.Action.BULK_ANONYMIZE, success=True)
        for _ in range(3)
    )
    rows = list(AuditLog.objects.order_by("id"))
    assert len(rows) == 5
    assert rows[0].pk == first.pk and rows[0].prev_hash == chain.GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.row_hash
    assert len({row.row_hash for row in rows}) == 5
    out = _verify()
    assert "5 audit rows verified" in out
    assert f"head: {rows[-1].pk}:{rows[-1].row_hash}" in out


def test_an_empty_trail_verifies():
    assert "0 audit rows verified" in _verify()


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "nothing happened"},
        {"success": False},
        {"username": "mallory"},
        {"file_id": "9a5b2c38-5bd4-4b37-9e56-d0c6c1e3a5a0"},
        {"client_address": "10.9.9.9"},
        {"count": 7},
        {"targets": ["study:1.2.3"]},
    ],
)
def test_an_edited_row_is_named(user, trigger_bypassed, change):
    rows = _write_rows(user, 5)
    AuditLog.objects.filter(pk=rows[2].pk).update(**change)
    message = _verify_fails()
    assert f"audit row {rows[2].pk} does not verify" in message and "edited" in message
    assert "2 rows before it verified" in message


def test_an_edited_timestamp_is_named(user, trigger_bypassed):
    rows = _write_rows(user, 3)
    AuditLog.objects.filter(pk=rows[1].pk).update(timestamp=rows[0].timestamp)
    assert f"audit row {rows[1].pk} does not verify" in _verify_fails()


def test_a_deleted_row_is_named_by_the_row_after_it(user, trigger_bypassed):
    rows = _write_rows(user, 5)
    AuditLog.objects.filter(pk=rows[2].pk).delete()
    message = _verify_fails()
    assert f"audit row {rows[3].pk} does not verify" in message and "deleted" in message


def test_deleting_the_first_rows_is_found(user, trigger_bypassed):
    rows = _write_rows(user, 3)
    AuditLog.objects.filter(pk=rows[0].pk).delete()
    assert f"audit row {rows[1].pk} does not verify" in _verify_fails()


def test_a_row_rewritten_with_its_hash_recomputed_breaks_the_next_link(user, trigger_bypassed):
    rows = _write_rows(user, 4)
    forged = AuditLog.objects.get(pk=rows[1].pk)
    forged.reason = "rewritten"
    forged_hash = chain.row_digest(
        forged.prev_hash, {name: getattr(forged, name) for name in chain.HASHED_FIELDS}
    )
    AuditLog.objects.filter(pk=forged.pk).update(reason="rewritten", row_hash=forged_hash)
    assert f"audit row {rows[2].pk} does not verify" in _verify_fails()


def test_an_anchor_finds_rows_removed_from_the_end_and_a_rewritten_trail(user, trigger_bypassed):
    rows = _write_rows(user, 4)
    head = f"{rows[-1].pk}:{rows[-1].row_hash}"
    assert "4 audit rows verified" in _verify(head)
    # The last row removed: the chain alone still verifies, the anchor does not.
    AuditLog.objects.filter(pk=rows[-1].pk).delete()
    assert "3 audit rows verified" in _verify()
    message = _verify_fails(head)
    assert f"anchor row {rows[-1].pk} is not in the trail" in message
    # An anchor whose hash no longer matches.
    assert f"audit row {rows[0].pk} does not verify" in _verify_fails(f"{rows[0].pk}:{'a' * 64}")
    with pytest.raises(CommandError, match="ROW_ID:HASH"):
        _verify("not-an-anchor")


@on_postgresql
@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_auditlog SET reason = 'x'", "DELETE FROM audit_auditlog", "TRUNCATE audit_auditlog"],
)
def test_the_trigger_refuses_update_delete_and_truncate(user, statement):
    _write_rows(user, 2)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert AuditLog.objects.count() == 2
    assert "2 audit rows verified" in _verify()


@on_postgresql
def test_the_orm_cannot_change_or_delete_a_row(user):
    row = _write_rows(user, 1)[0]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=row.pk).update(reason="x")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=row.pk).delete()
    assert AuditLog.objects.get(pk=row.pk).reason == ""


WRITERS, ROWS_EACH = 8, 40


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_writers_keep_one_valid_chain(user):
    """Eight connections (as eight web processes and workers would) write at once: one chain, no fork."""
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            start.wait()
            actor = Actor(user=user, client_address=f"10.0.0.{number}")
            for index in range(ROWS_EACH):
                if index % 4 == 0:
                    # A success row inside a caller's transaction, as services write them.
                    with transaction.atomic(), operation(actor=actor, action=AuditLog.Action.UPLOAD) as op:
                        op.succeed()
                elif index % 4 == 1:
                    record_many(
                        audit_entry(actor=actor, action=AuditLog.Action.BULK_ANONYMIZE, success=True)
                        for _ in range(3)
                    )
                else:
                    record_event(actor=actor, action=AuditLog.Action.STATUS, success=True)
        except BaseException as error:  # reported below, the thread must not die silently
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    expected = WRITERS * (ROWS_EACH // 4) * (1 + 3 + 2)
    assert AuditLog.objects.count() == expected
    # No fork: every row has its own predecessor.
    prevs = list(AuditLog.objects.values_list("prev_hash", flat=True))
    assert len(set(prevs)) == len(prevs)
    assert f"{expected} audit rows verified" in _verify()
