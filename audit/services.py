"""The one way other apps write to the audit trail."""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth.base_user import AbstractBaseUser

from audit.context import current_request_id
from audit.models import AuditLog

_REASON_MAX = AuditLog._meta.get_field("reason").max_length


@dataclass(frozen=True)
class Actor:
    """Who acts and from where: the API builds it from the request, commands from ``--user``."""

    user: AbstractBaseUser | None
    client_address: str | None = None
    # The request's id while one runs (audit.context), so all its rows share it; else a fresh one.
    request_id: uuid.UUID = field(default_factory=lambda: current_request_id() or uuid.uuid4())

    @property
    def username(self) -> str:
        return self.user.get_username() if self.user is not None else ""


def entry(
    *,
    actor: Actor,
    action: str,
    success: bool,
    file_id: uuid.UUID | str | None = None,
    status_code: int | None = None,
    reason: str = "",
) -> AuditLog:
    """Build (without saving) one audit row; ``reason`` must be PHI-free and is cut to its column."""
    user = actor.user if actor.user is not None and actor.user.is_authenticated else None
    return AuditLog(
        user=user,
        username=actor.username if user is not None else "",
        action=action,
        file_id=file_id,
        success=success,
        status_code=status_code,
        client_address=actor.client_address,
        reason=reason[:_REASON_MAX],
        request_id=actor.request_id,
    )


def record(**fields) -> AuditLog:
    """Write one audit row (see :func:`entry` for the fields) on the current connection.

    Callers put success rows inside the transaction of the change they describe (one commit for
    both) and failure rows after that transaction has rolled back, so a failure is never lost with
    the rollback.
    """
    row = entry(**fields)
    row.save(force_insert=True)
    return row


def record_many(rows: Iterable[AuditLog]) -> None:
    """Write many rows built by :func:`entry` in one INSERT (bulk operations, one row per file)."""
    AuditLog.objects.bulk_create(list(rows))
