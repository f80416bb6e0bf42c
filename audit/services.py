"""The one way other apps write to the audit trail."""

import uuid
from dataclasses import dataclass, field

from django.contrib.auth.base_user import AbstractBaseUser

from audit.models import AuditLog

_REASON_MAX = AuditLog._meta.get_field("reason").max_length


@dataclass(frozen=True)
class Actor:
    """Who acts and from where: the API builds it from the request, commands from ``--user``."""

    user: AbstractBaseUser | None
    client_address: str | None = None
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def username(self) -> str:
        return self.user.get_username() if self.user is not None else ""


def record(
    *,
    actor: Actor,
    action: str,
    success: bool,
    file_id: uuid.UUID | str | None = None,
    status_code: int | None = None,
    reason: str = "",
) -> AuditLog:
    """Write one audit row on the current connection and return it.

    Callers put success rows inside the transaction of the change they describe (one commit for
    both) and failure rows after that transaction has rolled back, so a failure is never lost with
    the rollback. ``reason`` must be free of patient data; it is cut to the column's length.
    """
    user = actor.user if actor.user is not None and actor.user.is_authenticated else None
    return AuditLog.objects.create(
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
