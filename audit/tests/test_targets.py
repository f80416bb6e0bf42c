"""Rows that name what a request touched (``targets``): hashed, verified, and old rows unchanged."""

import pytest
from django.contrib.auth import get_user_model

from audit import chain
from audit.models import AuditLog
from audit.services import Actor, operation

pytestmark = pytest.mark.django_db


def _digest(row: AuditLog) -> str:
    return chain.row_digest(row.prev_hash, {name: getattr(row, name) for name in chain.DIGEST_FIELDS})


def test_an_operation_names_each_target_once_and_its_row_hash_covers_them():
    user = get_user_model().objects.create_user("reader")
    with operation(actor=Actor(user=user), action=AuditLog.Action.SEARCH) as op:
        op.touch(studies=["1.2.3", "1.2.4"])
        op.touch(studies=["1.2.3"], instances=["1.2.3.9"])
    row = AuditLog.objects.get()
    assert row.targets == ["study:1.2.3", "study:1.2.4", "instance:1.2.3.9"]
    assert _digest(row) == row.row_hash
    row.targets = ["study:1.2.3"]
    assert _digest(row) != row.row_hash


def test_a_row_without_targets_hashes_as_rows_did_before_targets_existed():
    user = get_user_model().objects.create_user("reader")
    with operation(actor=Actor(user=user), action=AuditLog.Action.STATUS):
        pass
    row = AuditLog.objects.get()
    fields = {name: getattr(row, name) for name in chain.HASHED_FIELDS}  # no "targets" key at all
    assert chain.row_digest(row.prev_hash, fields) == row.row_hash


def test_a_failed_operation_keeps_its_targets():
    user = get_user_model().objects.create_user("reader")
    with pytest.raises(ValueError), operation(actor=Actor(user=user), action=AuditLog.Action.DOWNLOAD) as op:
        op.touch(instances=["1.2.6"])
        raise ValueError("boom")
    row = AuditLog.objects.get()
    assert (row.success, row.targets) == (False, ["instance:1.2.6"])
