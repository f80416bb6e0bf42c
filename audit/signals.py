"""Logins, logouts and failed logins (the admin's, through django.contrib.auth) in the audit trail.

A failed login records the client address and nothing of what was typed: a mistyped username can be
someone's name, or a password typed in the wrong box. Failed logins are unauthenticated refusals:
tallied per address and minute like the API's (``audit.services.tally_refusal``), so guessing
passwords cannot flood the trail.
"""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from audit.models import AuditLog
from audit.services import Actor, record_event, tally_refusal


def _address(request) -> str | None:
    return (request.META.get("REMOTE_ADDR") or None) if request is not None else None


def _logged_in(sender, request, user, **kwargs) -> None:
    record_event(
        actor=Actor(user=user, client_address=_address(request)), action=AuditLog.Action.LOGIN, success=True
    )


def _logged_out(sender, request, user, **kwargs) -> None:
    record_event(
        actor=Actor(user=user, client_address=_address(request)), action=AuditLog.Action.LOGOUT, success=True
    )


def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    tally_refusal(
        actor=Actor(user=None, client_address=_address(request)),
        action=AuditLog.Action.LOGIN_FAILED,
        status_code=200,
        reason="login refused (wrong credentials or inactive account)",
    )


def connect() -> None:
    user_logged_in.connect(_logged_in, dispatch_uid="audit-login")
    user_logged_out.connect(_logged_out, dispatch_uid="audit-logout")
    user_login_failed.connect(_login_failed, dispatch_uid="audit-login-failed")
