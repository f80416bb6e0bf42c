"""The audit trail's hash chain: what a row's hash covers, and the walk that checks every row.

Each row stores ``prev_hash`` (the hash of the row written before it) and ``row_hash``, a SHA-256
over ``prev_hash`` and the row's own fields in a fixed, versioned encoding (:func:`row_digest`).
Editing a row breaks its own hash; deleting or inserting one breaks its successor's link; so does
rewriting a row and every row after it, as soon as an auditor holds an earlier head (an *anchor*:
a row id and its hash, printed by ``verify_audit``).

Writers serialize on one lock (``lock_and_read_head``), so the chain follows the order of the ids: a
PostgreSQL advisory lock held until the writing transaction ends; on SQLite the write lock that
every transaction takes at BEGIN (``transaction_mode=IMMEDIATE`` in the settings).

This module knows nothing of Django models beyond the field names, so the migration that chains
the rows written before it uses the same encoding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

FORMAT = "audit-chain-v1"
# The hash before the first row.
GENESIS = "0" * 64
# The fields a row's hash covers, in order. The id is not among them: ids come from a sequence
# that skips values on rollback, so the order is proven by the links, not by the ids.
HASHED_FIELDS = (
    "timestamp",
    "user_id",
    "username",
    "action",
    "file_id",
    "success",
    "status_code",
    "client_address",
    "reason",
    "request_id",
    "count",
)
# Fields added after v1, hashed only when they hold something, so rows written before them keep
# their hashes: ``targets``, the studies, series and instances a request touched (DICOMweb).
OPTIONAL_FIELDS = ("targets",)
# Every field :func:`row_digest` reads.
DIGEST_FIELDS = HASHED_FIELDS + OPTIONAL_FIELDS
# One number for the advisory lock every writer takes (PostgreSQL): "audi" "t" in ASCII.
LOCK_KEY = 0x61756469_74


def _plain(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)  # UUIDs


def row_digest(prev_hash: str, fields: dict) -> str:
    """The hash of one row: ``prev_hash`` and the row's :data:`HASHED_FIELDS`, as JSON, in SHA-256.

    An optional field that holds something (:data:`OPTIONAL_FIELDS`) follows them, named.
    """
    payload = [FORMAT, prev_hash, *(_plain(fields[name]) for name in HASHED_FIELDS)]
    for name in OPTIONAL_FIELDS:
        if fields.get(name):
            payload.extend([name, fields[name]])
    encoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def lock_and_read_head(connection, table: str) -> str:
    """Take the chain's write lock for the current transaction and return the last row's hash.

    PostgreSQL: an advisory lock held until the transaction ends, then the head read by a second
    statement (a new snapshot, so it sees the row the previous holder committed), both in one round
    trip. SQLite: the transaction already holds the database's write lock (IMMEDIATE).
    """
    # The table is the model's own name, quoted; nothing of a request reaches this text.
    head = f"SELECT row_hash FROM {connection.ops.quote_name(table)} ORDER BY id DESC LIMIT 1"  # noqa: S608
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SELECT pg_advisory_xact_lock(%s); {head}", [LOCK_KEY])
        else:
            cursor.execute(head)
        row = cursor.fetchone()
    return row[0] if row else GENESIS


@dataclass(frozen=True)
class Break:
    """The first row that does not verify, and why (no field value is ever quoted)."""

    row_id: int
    reason: str


@dataclass(frozen=True)
class Walk:
    rows: int
    head_id: int | None
    head_hash: str
    first_break: Break | None
    anchors_found: frozenset[int]


def walk(rows: Iterable[dict], *, anchors: dict[int, str] | None = None) -> Walk:
    """Check ``rows`` (dicts with ``id``, ``prev_hash``, ``row_hash`` and the hashed fields, in id order).

    Stops at the first row that does not verify. ``anchors`` (row id → hash, noted earlier by an
    auditor) must each be found with the same hash, or that row is the break.
    """
    anchors = anchors or {}
    expected_prev, count, head_id, found = GENESIS, 0, None, set()
    for row in rows:
        row_id = row["id"]
        if row["prev_hash"] != expected_prev:
            reason = (
                "it is not linked to the row before it: a row between them was deleted or inserted, "
                "or the row before it was rewritten"
                if count
                else "the first row does not start the chain: rows before it were deleted"
            )
            return Walk(count, head_id, expected_prev, Break(row_id, reason), frozenset(found))
        if row_digest(row["prev_hash"], row) != row["row_hash"]:
            return Walk(
                count,
                head_id,
                expected_prev,
                Break(row_id, "its fields do not match its hash: the row was edited"),
                frozenset(found),
            )
        if row_id in anchors:
            if anchors[row_id] != row["row_hash"]:
                return Walk(
                    count,
                    head_id,
                    expected_prev,
                    Break(row_id, "its hash differs from the anchor noted for it: the trail was rewritten"),
                    frozenset(found),
                )
            found.add(row_id)
        expected_prev, count, head_id = row["row_hash"], count + 1, row_id
    return Walk(count, head_id, expected_prev, None, frozenset(found))


def chain(rows: Iterable[dict], prev_hash: str) -> Iterator[tuple[str, str]]:
    """``(prev_hash, row_hash)`` for each of ``rows`` in turn, starting after ``prev_hash``."""
    for row in rows:
        digest = row_digest(prev_hash, row)
        yield prev_hash, digest
        prev_hash = digest
