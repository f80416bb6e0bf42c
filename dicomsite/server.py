"""The web server's bounds: slow clients cannot hold it, chunked bodies are read, big bodies refused early.

gunicorn's master (``dicomsite/gunicorn.conf.py``) runs uvicorn workers (the ``uvicorn-worker``
package) on Django's ASGI handler. Connections live on each worker's event loop, so a client
that trickles its request holds no thread; the bounds below drop it all the same:

- **Headers**: a request's line and headers must arrive within ``DICOM_HEADER_TIMEOUT_SECONDS``
  of the connection (or of the previous response on a kept-alive one), else the connection is
  closed. uvicorn has no such timeout of its own (its keep-alive timer stops at the first byte).
- **Body**: after ``DICOM_BODY_GRACE_SECONDS`` the body must keep arriving at
  ``DICOM_BODY_MIN_RATE`` bytes/s on average, else 408 with a detail. A body declared or grown
  larger than ``DICOM_MAX_UPLOAD_SIZE`` (plus the multipart envelope) is a 413 at once, before
  it is read: Django's ASGI handler reads the whole body (to a temporary file beyond
  ``FILE_UPLOAD_MAX_MEMORY_SIZE``) before any view sees it.
- **Chunked bodies** (``Transfer-Encoding: chunked``, no length): once read, the request is
  given the length it turned out to have; Django's multipart parser reads nothing without one.

- **Threads**: the synchronous middleware chain runs in one hop in a pool of persistent threads
  (see ``BoundedASGIHandler``).

This is the one module that touches uvicorn's protocol class and ``ASGIHandler``'s methods
(``__call__``, ``handle``, ``create_request``, ``load_middleware``, ``get_response_async``); the
versions it was written against are pinned in requirements.txt (uvicorn 0.54, uvicorn-worker 0.4,
Django 5.2).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

# Requests refused here never reach Django's request-log middleware (dicomsite.logs): their line.
request_logger = logging.getLogger("dicomsite.requests")

# The multipart envelope around the file (boundaries, the other fields) on top of the file's limit.
ENVELOPE = 1024 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(
            settings.DICOM_HEADER_TIMEOUT_SECONDS, self._headers_too_slow
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class Worker(UvicornWorker):
    """The gunicorn worker class: uvicorn on asyncio with the bounded protocol, no lifespan."""

    # uvicorn's own access log writes query strings (an admin search by patient ID): off; the
    # request-log middleware (dicomsite.logs) writes one line per request without them.
    CONFIG_KWARGS = {
        "loop": "asyncio",
        "http": "dicomsite.server:BoundedHttpToolsProtocol",
        "lifespan": "off",
        "access_log": False,
    }


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BoundedASGIHandler(ASGIHandler):
    """Django's ASGI handler with the body bounds above and chunked bodies given their length.

    The middleware and the views are all synchronous: they run as one synchronous chain, the way
    the WSGI handler runs them, handed in one step to a pool of ``DICOM_WEB_THREADS`` threads
    that live as long as the worker. Django's own ASGI path adapts the chain at both ends and the
    view again (three trips between the event loop and a thread per request) and runs each request
    in a new thread, whose database connection cannot outlive it: that halved the rate of small
    requests. In the pool, each thread keeps its connection as WSGI threads do
    (``CONN_MAX_AGE``), checked and closed when unusable at the start and end of each request.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool = ThreadPoolExecutor(max_workers=settings.DICOM_WEB_THREADS, thread_name_prefix="django")

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        # Without ASGIHandler's per-request ThreadSensitiveContext (a new thread for each request,
        # for the little Django runs outside the chain: its signals, closing the response): those
        # go to asgiref's one shared thread; the request's own work runs in the pool.
        if scope["type"] != "http":
            raise ValueError(f"only HTTP connections are served, not {scope['type']}")
        await self.handle(scope, receive, send)

    async def get_response_async(self, request):
        return await sync_to_async(self._respond, thread_sensitive=False, executor=self._pool)(request)

    def _respond(self, request):
        # What the request_started and request_finished signals do for a WSGI thread; here they
        # fire in another thread, so the pool's thread looks after its own connection.
        close_old_connections()
        try:
            return self.get_response(request)
        finally:
            close_old_connections()

    async def handle(self, scope, receive, send):
        limit = settings.DICOM_MAX_UPLOAD_SIZE + ENVELOPE
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            return await _refuse(
                scope, send, 413, f"the request body of {declared} bytes exceeds the limit of {limit} bytes"
            )
        state = {"received": 0, "started": time.monotonic(), "refused": False, "complete": False}

        async def bounded_receive():
            if state["complete"]:
                # The body is in: what comes now is the disconnect Django listens for, unbounded.
                return await receive()
            grace, rate = settings.DICOM_BODY_GRACE_SECONDS, settings.DICOM_BODY_MIN_RATE
            deadline = state["started"] + grace + state["received"] / rate
            try:
                async with asyncio.timeout_at(
                    asyncio.get_running_loop().time() + max(deadline - time.monotonic(), 0)
                ):
                    message = await receive()
            except TimeoutError:
                return await _refused_body(
                    scope,
                    send,
                    state,
                    408,
                    f"the request body arrived slower than {rate} bytes/s (after {grace:g} s): closed",
                )
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
                if state["received"] > limit:
                    return await _refused_body(
                        scope,
                        send,
                        state,
                        413,
                        f"the request body exceeds the limit of {limit} bytes",
                        drain=receive if message.get("more_body") else None,
                    )
            return message

        async def guarded_send(message):
            if not state["refused"]:  # after a refusal, Django's own answer (if any) is dropped
                await send(message)

        await super().handle(scope, bounded_receive, guarded_send)

    def create_request(self, scope, body_file):
        if _declared_length(scope) is None and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            size = body_file.seek(0, 2)
            body_file.seek(0)
            scope = {**scope, "headers": [*scope.get("headers", []), (b"content-length", str(size).encode())]}
        return super().create_request(scope, body_file)


# A client that sends its whole body before reading the answer would find the connection reset
# (and the 413 lost) if it were closed under it: what it still sends, up to this, is read and dropped.
DRAIN_BYTES, DRAIN_SECONDS = 16 * 1024 * 1024, 5


async def _refused_body(scope, send, state: dict, status: int, detail: str, drain=None) -> dict:
    state["refused"] = True
    await _refuse(scope, send, status, detail, drain=drain)
    # Django's read_body stops at a disconnect (RequestAborted) and answers nothing more.
    return {"type": "http.disconnect"}


async def _drain(receive) -> None:
    drained = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while drained < DRAIN_BYTES:
                message = await receive()
                drained += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body"):
                    return
    except TimeoutError:
        return


async def _refuse(scope, send, status: int, detail: str, drain=None) -> None:
    fields = {"method": scope.get("method"), "path": scope.get("path"), "status": status, "user_id": None}
    request_logger.info(
        "%s %s %s refused by the server: %s",
        fields["method"],
        fields["path"],
        status,
        detail,
        extra={"fields": fields},
    )
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    if drain is not None:
        await _drain(drain)  # before the body: a response complete would end the reading
    await send({"type": "http.response.body", "body": body})
