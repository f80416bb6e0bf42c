"""The one way other apps write to the audit trail.

- :func:`operation`: a context manager around one audited operation (a read, an upload, a queued
  job). Its success row is written inside the caller's transaction (``Operation.succeed``), or
  when the block ends for operations that change nothing; its failure row after the block raised,
  so after the rollback of whatever it changed. Operations nest: a service opening an operation
  that its entry point already opened (same actor, same action) joins it, so one request writes
  one row however many layers take part.
- :func:`refused`: the refusal of a request before any operation began (no credentials, no
  permission).
- :func:`record_event`: a single event that is not an operation (a login, a logout).
- :func:`record_many`: many rows at once (a bulk run's batch, one row per file).

Refusals of unauthenticated requests are not written one per request: they are tallied per
client address, action and minute, and written as one row with a count once the minute is over
(:func:`flush_tallies`), so a flood cannot grow the trail without bound.

Every row is chained (``audit.chain``). Nothing here takes a value from a file or a request into a
row: reasons are details the caller guarantees PHI-free.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from audit import chain
from audit.context import current_request_id
from audit.models import AuditLog, RefusalTally

_REASON_MAX = AuditLog._meta.get_field("reason").max_length
_ADDRESS_FIELD = AuditLog._meta.get_field("client_address")

# (status code, PHI-free reason) of an exception; entry points pass their own (the API's maps DRF's
# validation errors to the same text its response carries).
Describe = Callable[[BaseException], tuple[int | None, str]]


@dataclass(frozen=True)
class Actor:
    """Who acts and from where: the API builds it from the request, commands from ``--user``."""

    user: AbstractBaseUser | None
    client_address: str | None = None
    # The request's id while one runs (audit.context), so all its rows share it; else a fresh one.
    request_id: uuid.UUID = field(default_factory=lambda: current_request_id() or uuid.uuid4())

    @property
    def authenticated(self) -> bool:
        return self.user is not None and self.user.is_authenticated

    @property
    def username(self) -> str:
        return self.user.get_username() if self.authenticated else ""


def describe_failure(error: BaseException) -> tuple[int | None, str]:
    """The project's errors carry ``status_code`` and a PHI-free ``detail``; anything else is a bug."""
    status, detail = getattr(error, "status_code", None), getattr(error, "detail", None)
    if isinstance(status, int) and isinstance(detail, str):
        return status, detail
    # Never str(error): a bug's message may quote anything it was handling.
    return 500, f"internal error ({type(error).__name__})"


# --- rows ---------------------------------------------------------------------------------------


def entry(
    *,
    actor: Actor,
    action: str,
    success: bool,
    file_id: uuid.UUID | str | None = None,
    status_code: int | None = None,
    reason: str = "",
    count: int = 1,
    timestamp: datetime | None = None,
    targets: Iterable[str] = (),
) -> AuditLog:
    """Build (without saving) one audit row; ``reason`` must be PHI-free and is cut to its column."""
    user = actor.user if actor.authenticated else None
    return AuditLog(
        timestamp=timestamp or timezone.now(),
        user=user,
        username=actor.username,
        action=action,
        file_id=uuid.UUID(str(file_id)) if file_id is not None else None,
        success=success,
        status_code=status_code,
        # As the column will hold it (IPv6 normalised), since the hash covers it.
        client_address=_ADDRESS_FIELD.get_prep_value(actor.client_address or None),
        reason=reason[:_REASON_MAX],
        request_id=actor.request_id,
        count=count,
        targets=list(targets),
    )


def _hashed_fields(row: AuditLog) -> dict:
    return {name: getattr(row, name) for name in chain.DIGEST_FIELDS}


def _write(rows: list[AuditLog]) -> None:
    """Chain ``rows`` after the last row and insert them, under the chain's lock."""
    if not rows:
        return
    with transaction.atomic():
        last = chain.lock_and_read_head(connection, AuditLog._meta.db_table)
        links = chain.chain((_hashed_fields(row) for row in rows), last)
        for row, (prev_hash, row_hash) in zip(rows, links, strict=True):
            row.prev_hash, row.row_hash = prev_hash, row_hash
        if len(rows) == 1:
            rows[0].save(force_insert=True)
        else:
            AuditLog.objects.bulk_create(rows)


def record_event(**fields) -> AuditLog:
    """Write one row for an event that is not an operation (a login, a logout); see :func:`entry`."""
    row = entry(**fields)
    _write([row])
    return row


def record_many(rows: Iterable[AuditLog]) -> None:
    """Write many rows built by :func:`entry` in one INSERT (bulk operations, one row per file)."""
    _write(list(rows))


# --- operations ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Operation:
    """An audited operation under way: what its row will say. Made by :func:`operation`."""

    actor: Actor
    action: str
    file_id: uuid.UUID | str | None = None
    reason: str = ""
    status_code: int | None = 200
    describe: Describe | None = None
    outcome: str = "open"  # open, recorded, refused, discarded
    committed: bool = False
    targets: list[str] = field(default_factory=list)

    def touch(
        self, *, studies: Iterable[str] = (), series: Iterable[str] = (), instances: Iterable[str] = ()
    ):
        """Name studies, series and instances (by UID) the operation touched, for its row's ``targets``."""
        seen = set(self.targets)
        for kind, uids in (("study", studies), ("series", series), ("instance", instances)):
            for uid in uids:
                target = f"{kind}:{uid}"
                if target not in seen:
                    seen.add(target)
                    self.targets.append(target)

    def succeed(self, *, file_id: uuid.UUID | str | None = None, reason: str | None = None) -> None:
        """Write the success row now, inside the caller's transaction (one commit for the change and its row)."""
        if self.outcome == "recorded":
            raise RuntimeError(f"{self.action} operation recorded twice")
        if file_id is not None:
            self.file_id = file_id
        if reason is not None:
            self.reason = reason
        _write([self._row(success=True)])
        self.outcome = "recorded"
        transaction.on_commit(self._mark_committed)

    def refuse(self, *, status_code: int | None, reason: str) -> None:
        """End the operation refused without raising (a redirect with a message): a failure row at the end."""
        self.outcome, self.status_code, self.reason = "refused", status_code, reason

    def discard(self) -> None:
        """This outcome is not worth a row (a thumbnail of a de-identified file on a list page)."""
        self.outcome = "discarded"

    def _mark_committed(self) -> None:
        self.committed = True

    def _row(self, *, success: bool) -> AuditLog:
        return entry(
            actor=self.actor,
            action=self.action,
            success=success,
            file_id=self.file_id,
            status_code=self.status_code,
            reason=self.reason,
            targets=self.targets,
        )


_open_operations: ContextVar[tuple[Operation, ...]] = ContextVar("audit_open_operations", default=())


@contextmanager
def operation(
    *,
    actor: Actor,
    action: str,
    file_id: uuid.UUID | str | None = None,
    describe: Describe | None = None,
) -> Iterator[Operation]:
    """Audit the block as one ``action`` by ``actor``: exactly one row, success or failure.

    Success: the row written by ``Operation.succeed`` inside the caller's transaction, or at the
    end of the block if nothing called it. Failure: the block raised (the row, with the status and
    detail ``describe`` gives, is written after the exception left the caller's ``atomic``, so it
    survives the rollback), or ``Operation.refuse`` was called. An operation already open for the
    same actor and action is joined: the outer one writes the row.
    """
    for outer in _open_operations.get():
        if outer.action == action and outer.actor == actor:
            if file_id is not None:
                outer.file_id = file_id
            yield outer
            return
    op = Operation(actor=actor, action=action, file_id=file_id, describe=describe)
    token = _open_operations.set((*_open_operations.get(), op))
    try:
        yield op
    except Exception as error:
        _open_operations.reset(token)
        if op.outcome == "discarded" or (op.outcome == "recorded" and op.committed):
            raise
        status, reason = (describe or describe_failure)(error)
        _record_failure(
            op.actor, action=action, file_id=op.file_id, status_code=status, reason=reason, targets=op.targets
        )
        raise
    _open_operations.reset(token)
    if op.outcome == "open":
        _write([op._row(success=True)])
    elif op.outcome == "refused":
        _record_failure(
            op.actor,
            action=action,
            file_id=op.file_id,
            status_code=op.status_code,
            reason=op.reason,
            targets=op.targets,
        )


def refused(
    *,
    actor: Actor,
    action: str,
    error: BaseException,
    file_id: uuid.UUID | str | None = None,
    describe: Describe | None = None,
) -> None:
    """Audit a request refused before its operation began (credentials, permissions, throttling)."""
    status, reason = (describe or describe_failure)(error)
    _record_failure(actor, action=action, file_id=file_id, status_code=status, reason=reason)


def _record_failure(
    actor: Actor, *, action: str, file_id, status_code: int | None, reason: str, targets: Iterable[str] = ()
) -> None:
    if actor.authenticated:
        _write(
            [
                entry(
                    actor=actor,
                    action=action,
                    success=False,
                    file_id=file_id,
                    status_code=status_code,
                    reason=reason,
                    targets=targets,
                )
            ]
        )
    else:
        tally_refusal(actor=actor, action=action, status_code=status_code, reason=reason)


# --- tallies of unauthenticated refusals --------------------------------------------------------


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def tally_refusal(
    *, actor: Actor, action: str, status_code: int | None, reason: str, now: datetime | None = None
) -> None:
    """Count one refusal of an unauthenticated request in its address's tally for this minute.

    The tallies of minutes already over are written to the trail on the way (:func:`flush_tallies`).
    The user, if any, is not kept: an unauthenticated request has none.
    """
    now = now or timezone.now()
    minute = _minute(now)
    address = _ADDRESS_FIELD.get_prep_value(actor.client_address or None) or ""
    key = {"client_address": address, "action": action, "minute": minute}
    with transaction.atomic():
        counted = RefusalTally.objects.filter(**key).update(count=F("count") + 1, status_code=status_code)
        if not counted:
            try:
                with transaction.atomic():
                    RefusalTally.objects.create(
                        **key, count=1, status_code=status_code, reason=reason[:_REASON_MAX]
                    )
            except IntegrityError:  # another process made it in between
                RefusalTally.objects.filter(**key).update(count=F("count") + 1, status_code=status_code)
    if RefusalTally.objects.filter(minute__lt=minute).exists():
        flush_tallies(now=now)


def flush_tallies(*, now: datetime | None = None, everything: bool = False) -> int:
    """Write one trail row per tally of a minute that is over (every tally with ``everything``).

    Each tally is deleted and its row written in one transaction; a tally another process is
    writing is skipped (it will be gone or still there next time). Returns the rows written.
    """
    tallies = RefusalTally.objects.all()
    if not everything:
        tallies = tallies.filter(minute__lt=_minute(now or timezone.now()))
    written = 0
    for tally_id in list(tallies.order_by("minute", "pk").values_list("pk", flat=True)[:10_000]):
        with transaction.atomic():
            tally = RefusalTally.objects.select_for_update(skip_locked=True).filter(pk=tally_id).first()
            if tally is None:
                continue
            deleted, _ = RefusalTally.objects.filter(pk=tally.pk).delete()
            if not deleted:
                continue
            end = tally.minute + timedelta(minutes=1)
            plural = "s" if tally.count != 1 else ""
            _write(
                [
                    entry(
                        actor=Actor(user=None, client_address=tally.client_address or None),
                        action=tally.action,
                        success=False,
                        status_code=tally.status_code,
                        count=tally.count,
                        timestamp=tally.minute,
                        reason=(
                            f"{tally.count} unauthenticated request{plural} refused from "
                            f"{tally.minute:%H:%M} to {end:%H:%M} UTC: {tally.reason}"
                        ),
                    )
                ]
            )
            written += 1
    return written
