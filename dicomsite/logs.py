"""The service's log lines: one per request, JSON in production, and the formatter that writes them.

In production (``DJANGO_PRODUCTION=true``) every record is one JSON object on one line:
``timestamp``, ``level``, ``logger``, ``message``, ``request_id``, plus the ``fields`` a record
carries (``extra={"fields": {...}}``: the request line's method, path, status, duration and user
id; a job's task, id, status and duration). In development the same records are the plain lines
of the ``plain`` formatter. Neither ever holds a query string: an admin search by patient ID
lives there.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from django.utils.functional import LazyObject, empty

request_logger = logging.getLogger("dicomsite.requests")

_BASE_KEYS = ("timestamp", "level", "logger", "message", "request_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a record's ``fields`` (a dict) become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None if request_id in (None, "-") else request_id,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({key: value for key, value in fields.items() if key not in _BASE_KEYS})
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _resolved_user_id(request) -> int | str | None:
    """The id of the user the request acted as, if anything looked the user up; never a new query.

    DRF authenticates on its own ``Request`` and sets the user on the Django request too (its
    ``user`` setter), so a token-authenticated API request shows its user here once the view ran.
    Django's session user stays a lazy object until something reads it: if nothing did, the
    request did not need a user, and looking it up now would cost a query (and fail while the
    database is down), so the line says ``null``.
    """
    user = request.__dict__.get("user")
    if user is None:
        return None
    if isinstance(user, LazyObject):
        if user._wrapped is empty:
            return None
        user = user._wrapped
    return user.pk if getattr(user, "is_authenticated", False) else None


class RequestLogMiddleware:
    """Write one line per request: method, path (no query string), status, duration, user id.

    Placed after the authentication middleware, inside the request id's middleware, so the line
    carries the request's id. ``duration_ms`` is the time until the response was ready; a streamed
    download's body is sent after that. The line holds no message of any exception.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        started = time.monotonic()
        response = self.get_response(request)
        log_request(request, response, started=started)
        return response


def log_request(request, response, *, started: float) -> None:
    """The request's one line (``started``: its ``time.monotonic()`` when it reached the service)."""
    fields = {
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "user_id": _resolved_user_id(request),
    }
    request_logger.info(
        "%s %s %s %.1f ms user %s",
        fields["method"],
        fields["path"],
        fields["status"],
        fields["duration_ms"],
        fields["user_id"] if fields["user_id"] is not None else "-",
        extra={"fields": fields},
    )
