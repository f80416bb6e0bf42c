"""The request id: one per HTTP request, on every audit row and every log line written while it runs.

A ContextVar, so each thread (gunicorn's gthread workers) and each task sees its own. Outside a
request (commands, the worker) there is none and each Actor gets its own id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.utils.log import log_response

_request_id: ContextVar[uuid.UUID | None] = ContextVar("request_id", default=None)


def current_request_id() -> uuid.UUID | None:
    return _request_id.get()


@contextmanager
def request_id_scope() -> Iterator[uuid.UUID]:
    """A new request id for the block: on every audit row and log line written in it."""
    request_id = uuid.uuid4()
    token = _request_id.set(request_id)
    try:
        yield request_id
    finally:
        _request_id.reset(token)


def log_failed_response(request, response) -> None:
    """Django's "Not Found: /path" line of a 4xx or 5xx, written while the request id is set.

    Django writes it after every middleware returned, when the id is gone; written here, the line
    carries it (and Django does not write it again).
    """
    if response.status_code >= 400 and not getattr(response, "_has_been_logged", False):
        log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)


class RequestIdMiddleware:
    """Give the request an id, expose it as ``X-Request-ID`` and clear it when the request ends."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        with request_id_scope() as request_id:
            response = self.get_response(request)
            log_failed_response(request, response)
        response["X-Request-ID"] = str(request_id)
        return response


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _request_id.get()
        record.request_id = str(request_id) if request_id is not None else "-"
        return True
