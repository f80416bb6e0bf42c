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
- **Raw DICOM bodies** (a POST of ``Content-Type: application/dicom``) are written straight to
  staging as they arrive, through the same writer as multipart uploads (``dicom.uploads``).
- **STOW-RS bodies** (a POST under ``/dicomweb/`` of ``multipart/related; type="application/dicom"``)
  are parsed as they arrive (``dicomweb.multipart``) and each part written to its own staging file
  through that writer; the request gets the list (``request.staged_parts``), removed when the
  request ends unless the service stored them. The whole body is bounded as any other.

- **Plain reads and raw uploads** (a token-authenticated GET of a file's metadata, status or
  download; a POST of a raw DICOM body to the upload) are answered by ``dicom.api.direct``
  without the middleware chain and DRF's dispatch; every other request, and any such request it
  does not take, goes through Django as usual.

- **Threads**: a request is served in one hop to a pool of persistent threads, as a WSGI thread
  serves it (see ``BoundedASGIHandler``).

This is the one module that touches uvicorn's protocol class and ``ASGIHandler``'s methods (it
overrides ``__call__``, ``handle``, ``create_request`` and ``load_middleware``, and calls
``read_body``, ``create_request`` and ``get_response``); the versions it was written against are
pinned in requirements.txt (uvicorn 0.54, uvicorn-worker 0.4, Django 5.2).
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import itertools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.urls import set_script_prefix
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from dicom.services.errors import FileTooLargeError
from dicom.uploads import StagedUpload, StagingWriter
from dicomweb.multipart import MultipartError, PartStager, StagedParts, related_boundary

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
    """Django's ASGI handler with the body bounds above, chunked bodies given their length, one hop.

    The middleware and the views are all synchronous. Django's own ASGI path goes between the event
    loop and threads several times per request (the request_started signal, the middleware chain
    adapted at both ends and the view again, the response's close, each block of a streamed
    file), and runs each request in a new thread, whose database connection cannot outlive it:
    small requests ran at half the rate of the WSGI server. Here a request, once its body is in,
    is served in one step on a pool of ``DICOM_WEB_THREADS`` threads that live as long as the
    worker, the way a WSGI thread serves it: the request_started signal, the synchronous chain,
    the response rendered (or a streamed one's first block read) and closed, all in that thread,
    which keeps its database connection (``CONN_MAX_AGE``; the signals check and close it when
    unusable). The event loop then sends what the thread produced; a streamed file's further
    blocks are read in the pool, one step each.
    """

    def __init__(self) -> None:
        super().__init__()
        from dicom.api import direct  # models: once Django is set up, as the handler is made after

        self._respond_directly = direct.respond
        self._pool = ThreadPoolExecutor(max_workers=settings.DICOM_WEB_THREADS, thread_name_prefix="django")

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"only HTTP connections are served, not {scope['type']}")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        limit = settings.DICOM_MAX_UPLOAD_SIZE + ENVELOPE
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            return await _refuse(
                scope, send, 413, f"the request body of {declared} bytes exceeds the limit of {limit} bytes"
            )
        state = {"received": 0, "started": time.monotonic()}

        async def bounded_receive():
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
                    408,
                    f"the request body arrived slower than {rate} bytes/s (after {grace:g} s): closed",
                )
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    return await _refused_body(
                        scope,
                        send,
                        413,
                        f"the request body exceeds the limit of {limit} bytes",
                        drain=receive if message.get("more_body") else None,
                    )
            return message

        try:
            if _is_raw_dicom(scope):
                body_file = await _stage_body(bounded_receive)
            elif (boundary := _stow_boundary(scope)) is not None:
                body_file = await _stage_parts(bounded_receive, boundary)
            else:
                body_file = await self.read_body(bounded_receive)
        except RequestAborted:
            return  # the client went away, or the body was refused above (and answered)
        except FileTooLargeError as error:
            return await _refuse(scope, send, 413, error.detail, drain=receive)
        loop = asyncio.get_running_loop()
        try:
            # The request's own context (request id, audit actor) dies with it, as under WSGI.
            context = contextvars.copy_context()
            status, headers, blocks, rest = await loop.run_in_executor(
                self._pool, context.run, self._serve, scope, body_file
            )
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if rest is None:
                await send({"type": "http.response.body", "body": b"".join(blocks)})
                return
            response, iterator = rest
            # A client that goes away mid-download stops the reading (uvicorn drops what is sent
            # after a disconnect without a word, so the loop would read the whole file for nobody).
            gone = asyncio.create_task(receive())
            try:
                for block in blocks:
                    await send({"type": "http.response.body", "body": block, "more_body": True})
                while (
                    not gone.done()
                    and (block := await loop.run_in_executor(self._pool, next, iterator, _END)) is not _END
                ):
                    await send({"type": "http.response.body", "body": block, "more_body": True})
                await send({"type": "http.response.body"})
            finally:
                gone.cancel()
                await loop.run_in_executor(self._pool, response.close)
        finally:
            body_file.close()

    def _serve(self, scope, body_file) -> tuple[int, list, list[bytes], tuple | None]:
        """In a pool thread: the request through Django, and its response ready to send.

        A rendered response is closed here; a streamed one has its first block read here and,
        when there is more, is returned with its iterator for the event loop to finish.
        """
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        # Plain token-authenticated reads and raw uploads skip the middleware and DRF (dicom.api.direct).
        response = self._respond_directly(scope, body_file)
        if response is None:
            request, response = self.create_request(scope, body_file)
            if request is not None:
                response = self.get_response(request)
        headers = _response_headers(response)
        if not response.streaming:
            try:
                return response.status_code, headers, [response.content], None
            finally:
                response.close()
        iterator = iter(response.streaming_content)
        blocks = list(itertools.islice(iterator, 2))  # a second block: there is more to come
        if len(blocks) < 2:  # a file of one block: sent at once, closed now
            response.close()
            return response.status_code, headers, blocks, None
        return response.status_code, headers, blocks, (response, iterator)

    def create_request(self, scope, body_file):
        parts = None
        if isinstance(body_file, StagedParts):  # the body is in its staged parts: none left to read
            parts, body_file = body_file, io.BytesIO()
        if _declared_length(scope) is None and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            size = body_file.seek(0, 2)
            body_file.seek(0)
            scope = {**scope, "headers": [*scope.get("headers", []), (b"content-length", str(size).encode())]}
        request, response = super().create_request(scope, body_file)
        if request is not None and isinstance(body_file, StagedUpload):
            request.staged_upload = body_file  # the API takes it from here (dicom.api.views)
        if request is not None and parts is not None:
            request.staged_parts = parts  # STOW-RS takes them from here (dicomweb.stow)
        return request, response


_END = object()


def _is_raw_dicom(scope) -> bool:
    """A POST whose body is one DICOM file (``Content-Type: application/dicom``)."""
    if scope.get("method") != "POST":
        return False
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/dicom"
    return False


async def _stage_body(receive) -> StagedUpload:
    """A raw DICOM body written straight to staging (preamble zeroed, hashed, bounded) as it arrives.

    Not spooled first as other bodies are: the file is received once, and the request's body is
    the staged file, removed when the request ends unless the service stored it.
    """
    return await _receive_into(receive, StagingWriter())


async def _receive_into(receive, receiver):
    """The body's messages given to ``receiver`` (``write``, then ``finish``: its result) as they
    arrive; a client that goes away, or any error, has it ``discard`` what it staged."""
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            receiver.write(message.get("body", b""))
            if not message.get("more_body", False):
                return receiver.finish()
    except BaseException:
        receiver.discard()
        raise


STOW_TYPE = "application/dicom"


def _stow_boundary(scope) -> str | None:
    """The boundary of a STOW-RS body (a POST under /dicomweb/ of multipart/related of DICOM parts).

    Any other body under /dicomweb/ is read as usual (the view answers 415 without reading it).
    """
    if scope.get("method") != "POST":
        return None
    path = scope.get("path", "")
    root = scope.get("root_path", "").rstrip("/")
    if not path.removeprefix(root).startswith("/dicomweb/"):
        return None
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            try:
                return related_boundary(value.decode("latin-1"), part_type=STOW_TYPE)
            except MultipartError:
                return None
    return None


async def _stage_parts(receive, boundary: str) -> StagedParts:
    """A STOW-RS body's parts each written straight to staging as they arrive (``PartStager``).

    A part's failure (not DICOM, too large) or the body's (malformed, too many parts) is recorded
    in the result for the view to answer; the rest of the body is still read (bounded as any).
    """
    stager = PartStager(
        boundary,
        part_type=STOW_TYPE,
        max_parts=settings.DICOMWEB_MAX_PARTS,
        max_header_size=settings.DICOMWEB_MAX_PART_HEADER_SIZE,
    )
    return await _receive_into(receive, stager)


def _response_headers(response) -> list[tuple[bytes, bytes]]:
    headers = [
        (
            name.encode("ascii") if isinstance(name, str) else name,
            value.encode("latin1") if isinstance(value, str) else value,
        )
        for name, value in response.items()
    ]
    headers.extend(
        (b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
        for cookie in response.cookies.values()
    )
    return headers


# A client that sends its whole body before reading the answer would find the connection reset
# (and the 413 lost) if it were closed under it: what it still sends, up to this, is read and dropped.
DRAIN_BYTES, DRAIN_SECONDS = 16 * 1024 * 1024, 5


async def _refused_body(scope, send, status: int, detail: str, drain=None) -> dict:
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
