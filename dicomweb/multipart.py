"""Reading ``multipart/related`` bodies (RFC 2046, RFC 2387) as they arrive, and staging their parts.

Two layers, both fed bytes in whatever blocks the transport gives (a socket's, an ASGI message's,
a WSGI stream's reads), so the web server (``dicomsite.server``) and a view reading
``request.stream`` use the very same code:

- :class:`MultipartReader`: the parser. ``feed(data)`` returns the events the bytes completed
  (:class:`PartStart` with the part's headers, :class:`PartData` with a block of its body,
  :class:`PartEnd`); ``close()`` says the body ended, and how (:class:`BodyEnd`). It holds at most
  one part's headers and a delimiter's length of body in memory, never a part. Accepted forms: the
  boundary at the very start or after a preamble (a leading CRLF, any text), transport padding
  (spaces, tabs) after a delimiter, an epilogue after the close delimiter. Bounds: part headers of at
  most ``max_header_size`` bytes and at most ``max_parts`` parts (beyond them :class:`MultipartError`).
- :func:`read_parts`: the same for a small body held in memory (a test reading a response).
- :class:`PartStager`: each part's body written to staging through ``dicom.uploads.StagingWriter``
  (preamble zeroed, hashed, at most ``DICOM_MAX_UPLOAD_SIZE``) as it arrives; the result,
  :class:`StagedParts`, lists every part in order as staged or failed (a part that is not
  ``application/dicom``, too large, cut short by the end of the body, or whose staging failed on
  disk), and removes whatever staged file the request did not consume when it is closed.

Nothing here imports Django models (the web server imports it before the apps are ready).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from dicom.services.errors import FileTooLargeError
from dicom.uploads import StagedUpload, StagingWriter, receive_stream

# RFC 2046 5.1.1: characters from this set (a space, but not last), at most 70 of them; taken up to
# 200, as clients send longer ones (Orthanc's DICOMweb plugin: two UUIDs, 73 characters).
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,199}[0-9A-Za-z'()+_,\-./:=?]$")
_PADDING = b" \t"
MAX_PADDING = 1024  # transport padding after a delimiter, before its CRLF


class MultipartError(Exception):
    """The body is not a readable multipart body (or exceeds a bound of the whole request)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class MediaType:
    """A ``Content-Type`` value: its type (lowercased) and its parameters (names lowercased, unquoted)."""

    type: str
    params: dict[str, str]


# A parameter of a header value (RFC 9110 5.6.6): a token name, a token or quoted-string value.
_PARAMETER = re.compile(r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*(?:;|$)""")
_QUOTED_PAIR = re.compile(r"\\(.)")


def parse_media_type(value: str) -> MediaType:
    """Parse a ``Content-Type`` header value; parameters may be quoted (with ``\\`` escapes) or not.

    A parameter that is not ``name=value`` is skipped; a parameter sent twice keeps its last value.
    """
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        # Matched at each parameter's start only (never searched for): linear in the value's length.
        match = _PARAMETER.match(rest, pos)
        if match is None:
            end = rest.find(";", pos)
            if end < 0:
                break
            pos = end + 1
            continue
        name, raw = match.group(1), match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = _QUOTED_PAIR.sub(r"\1", raw[1:-1])
        params[name.lower()] = raw
        pos = match.end()
    return MediaType(type=media_type.strip().lower(), params=params)


def related_boundary(value: str, *, part_type: str) -> str:
    """The boundary of a ``multipart/related`` ``Content-Type`` whose ``type`` is ``part_type``.

    Raises ``MultipartError`` naming what is missing or wrong (the type, the ``type`` parameter,
    the boundary).
    """
    media = parse_media_type(value)
    if media.type != "multipart/related":
        raise MultipartError(f'the body must be multipart/related; type="{part_type}"')
    if media.params.get("type", "").strip().lower() != part_type:
        raise MultipartError(f"the multipart/related body's type parameter must be {part_type}")
    boundary = media.params.get("boundary", "")
    if not _BOUNDARY.match(boundary):
        raise MultipartError("the multipart/related body has no valid boundary parameter")
    return boundary


@dataclass(frozen=True)
class PartStart:
    """A part begins: its headers, names lowercased (a header sent twice keeps its last value)."""

    headers: dict[str, str]

    @property
    def content_type(self) -> str:
        return parse_media_type(self.headers.get("content-type", "text/plain")).type


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """The current part ended at its delimiter: it is complete."""


@dataclass(frozen=True)
class BodyEnd:
    """The body ended; ``complete`` when at its close delimiter, else it was cut short (in a part
    when ``in_part``: that part is incomplete)."""

    complete: bool
    in_part: bool


_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _EPILOGUE = range(5)


class MultipartReader:
    """An incremental ``multipart`` parser: bytes in, part events out (see the module's docstring)."""

    def __init__(self, boundary: str, *, max_parts: int, max_header_size: int) -> None:
        self._dash_boundary = b"--" + boundary.encode("ascii")
        self._delimiter = b"\r\n" + self._dash_boundary
        self._max_parts = max_parts
        self._max_header_size = max_header_size
        self._buffer = bytearray()
        self._state = _PREAMBLE
        self._at_start = True  # the first delimiter may open the body without its CRLF
        self.parts = 0

    def feed(self, data: bytes) -> list[PartStart | PartData | PartEnd]:
        """Parse the next bytes of the body; the events they complete. Raises ``MultipartError``."""
        if self._state == _EPILOGUE:
            return []
        self._buffer += data
        events: list[PartStart | PartData | PartEnd] = []
        while self._step(events):
            pass
        return events

    def close(self) -> BodyEnd:
        """The body ended: whether it was complete (at its close delimiter)."""
        in_part = self._state in (_HEADERS, _BODY)
        complete = self._state == _EPILOGUE
        self._buffer.clear()
        self._state = _EPILOGUE
        return BodyEnd(complete=complete, in_part=in_part)

    def _step(self, events: list) -> bool:
        """Advance by one state if the buffer allows; whether to try again."""
        buffer = self._buffer
        if self._state == _PREAMBLE:
            if self._at_start:
                if len(buffer) < len(self._dash_boundary):
                    return False
                self._at_start = False
                if buffer.startswith(self._dash_boundary):
                    del buffer[: len(self._dash_boundary)]
                    self._state = _AFTER_DELIMITER
                    return True
            found = buffer.find(self._delimiter)
            if found < 0:
                # The preamble is dropped as it comes; keep what could start a delimiter.
                del buffer[: max(len(buffer) - len(self._delimiter) + 1, 0)]
                return False
            del buffer[: found + len(self._delimiter)]
            self._state = _AFTER_DELIMITER
            return True
        if self._state == _AFTER_DELIMITER:
            if len(buffer) < 2:
                return False
            if buffer.startswith(b"--"):
                buffer.clear()
                self._state = _EPILOGUE
                return False
            head = bytes(buffer[: MAX_PADDING + 2])
            padding = len(head) - len(head.lstrip(_PADDING))
            if padding > MAX_PADDING:
                raise MultipartError("a multipart delimiter is followed by too much padding")
            rest = head[padding:]
            if len(rest) < 2:
                return False
            if not rest.startswith(b"\r\n"):
                raise MultipartError("a multipart delimiter is not followed by a line break")
            del buffer[: padding + 2]
            self.parts += 1
            if self.parts > self._max_parts:
                raise MultipartError(f"the body has more than {self._max_parts} parts")
            self._state = _HEADERS
            return True
        if self._state == _HEADERS:
            if buffer.startswith(b"\r\n"):  # a part without headers
                end, skip = 0, 2
            else:
                end, skip = buffer.find(b"\r\n\r\n"), 4
            if end < 0:
                if len(buffer) > self._max_header_size:
                    raise MultipartError(f"a part's headers exceed {self._max_header_size} bytes")
                return False
            if end > self._max_header_size:
                raise MultipartError(f"a part's headers exceed {self._max_header_size} bytes")
            events.append(PartStart(headers=_parse_headers(bytes(buffer[:end]))))
            del buffer[: end + skip]
            self._state = _BODY
            return True
        if self._state == _BODY:
            found = buffer.find(self._delimiter)
            if found >= 0:
                if found:
                    events.append(PartData(bytes(buffer[:found])))
                events.append(PartEnd())
                del buffer[: found + len(self._delimiter)]
                self._state = _AFTER_DELIMITER
                return True
            # Everything but what could be the start of a delimiter cut by this block's end.
            keep = len(self._delimiter) - 1
            cut = buffer.rfind(b"\r", max(len(buffer) - keep, 0))
            safe = cut if cut >= 0 else len(buffer)
            if safe:
                events.append(PartData(bytes(buffer[:safe])))
                del buffer[:safe]
            return False
        return False


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    name = ""
    for line in block.decode("latin-1").split("\r\n"):
        if line[:1] in (" ", "\t") and name:  # a folded line continues the previous header
            headers[name] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue  # not a header line: ignored, as mail readers do
        name = key.strip().lower()
        headers[name] = value.strip()
    return headers


@dataclass(frozen=True)
class Part:
    """A whole part held in memory (:func:`read_parts`): its headers and its body."""

    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return parse_media_type(self.headers.get("content-type", "text/plain")).type


def read_parts(
    blocks: Iterable[bytes] | bytes,
    boundary: str,
    *,
    max_parts: int = 100_000,
    max_header_size: int = 64 * 1024,
) -> list[Part]:
    """Every part of a small multipart body (a response in a test, a client's reading), in memory.

    Raises ``MultipartError`` for a malformed body or one that ends before its close delimiter.
    Large bodies go through :class:`MultipartReader` (or :class:`PartStager`) instead.
    """
    reader = MultipartReader(boundary, max_parts=max_parts, max_header_size=max_header_size)
    parts: list[Part] = []
    headers: dict[str, str] | None = None
    chunks: list[bytes] = []
    for block in [blocks] if isinstance(blocks, bytes | bytearray) else blocks:
        for event in reader.feed(bytes(block)):
            if isinstance(event, PartStart):
                headers, chunks = event.headers, []
            elif isinstance(event, PartData):
                chunks.append(event.data)
            elif headers is not None:
                parts.append(Part(headers=headers, body=b"".join(chunks)))
                headers = None
    if not reader.close().complete:
        raise MultipartError("the multipart body ends before its closing boundary")
    return parts


# --- staging ------------------------------------------------------------------------------------


@dataclass
class StagedPart:
    """One part of the body, in order: staged (``upload``) or failed (``failure``, a PHI-free detail).

    ``failure_kind`` is ``"invalid"`` (not the expected type, cut short) or ``"resources"`` (too
    large, staging failed on disk).
    """

    index: int
    content_type: str
    upload: StagedUpload | None = None
    failure: str = ""
    failure_kind: str = ""


@dataclass
class StagedParts:
    """The parts of a body staged by :class:`PartStager`; ``error`` when the body as a whole was refused
    (then no part is kept). ``close`` removes every staged file a service did not consume."""

    parts: list[StagedPart] = field(default_factory=list)
    error: str = ""

    def close(self) -> None:
        for part in self.parts:
            if part.upload is not None:
                part.upload.close()


class PartStager:
    """Feeds a :class:`MultipartReader` and writes each ``part_type`` part to its own staging file.

    A part of another type is not written (failed, ``invalid``); one over ``DICOM_MAX_UPLOAD_SIZE``
    is dropped as soon as it is (failed, ``resources``), the rest of its bytes skipped. A structural
    error of the body (``MultipartError``) fails the whole body: staged files removed at once,
    further bytes ignored, ``result().error`` says why.
    """

    def __init__(self, boundary: str, *, part_type: str, max_parts: int, max_header_size: int) -> None:
        self._reader = MultipartReader(boundary, max_parts=max_parts, max_header_size=max_header_size)
        self._part_type = part_type
        self._result = StagedParts()
        self._writer: StagingWriter | None = None
        self._current: StagedPart | None = None

    # The receiver interface of dicom.uploads.StagingWriter: write, finish, discard.
    def write(self, data: bytes) -> None:
        """Take the next bytes of the body (never raises for bad input: see ``result``)."""
        if self._result.error or not data:
            return
        try:
            events = self._reader.feed(data)
        except MultipartError as error:
            self._fail_body(error.detail)
            return
        for event in events:
            self._handle(event)

    def feed_all(self, blocks: Iterable[bytes]) -> StagedParts:
        """Feed every block, then finish: the result."""
        for block in blocks:
            self.write(block)
        return self.finish()

    def finish(self) -> StagedParts:
        """The body ended: the staged parts (a part cut short by the end is failed, ``invalid``)."""
        if not self._result.error:
            end = self._reader.close()
            if end.in_part and self._current is not None:
                self._drop_current(
                    "the part is cut short: the body ended before its closing boundary", "invalid"
                )
            if not self._result.parts:
                self._fail_body("the body has no part (no multipart boundary found)")
        return self._result

    def discard(self) -> None:
        """The body will not be finished (the client went away): remove everything staged."""
        self._discard_writer()
        self._result.close()
        self._result.parts.clear()

    def _handle(self, event) -> None:
        if isinstance(event, PartStart):
            part = StagedPart(index=len(self._result.parts), content_type=event.content_type)
            self._result.parts.append(part)
            self._current = part
            if part.content_type != self._part_type:
                part.failure, part.failure_kind = (
                    f"the part's Content-Type is not {self._part_type}",
                    "invalid",
                )
            else:
                self._open_writer()
        elif isinstance(event, PartData):
            if self._writer is None:
                return
            try:
                self._writer.write(event.data)
            except FileTooLargeError as error:  # the writer removed its file
                self._writer = None
                self._set_failure(error.detail, "resources")
            except OSError:
                self._drop_current("the part could not be staged (storage unavailable or full)", "resources")
        elif isinstance(event, PartEnd):
            if self._writer is not None and self._current is not None:
                writer, self._writer = self._writer, None
                try:
                    self._current.upload = writer.finish()
                except OSError:
                    writer.discard()
                    self._set_failure(
                        "the part could not be staged (storage unavailable or full)", "resources"
                    )
            self._current = None

    def _open_writer(self) -> None:
        try:
            self._writer = StagingWriter()
        except OSError:
            self._writer = None
            self._set_failure("the part could not be staged (storage unavailable or full)", "resources")

    def _set_failure(self, detail: str, kind: str) -> None:
        if self._current is not None and not self._current.failure:
            self._current.failure, self._current.failure_kind = detail, kind

    def _drop_current(self, detail: str, kind: str) -> None:
        self._discard_writer()
        self._set_failure(detail, kind)

    def _discard_writer(self) -> None:
        if self._writer is not None:
            self._writer.discard()
            self._writer = None

    def _fail_body(self, detail: str) -> None:
        self.discard()
        self._result.error = detail


def stage_stream_parts(
    stream,
    boundary: str,
    *,
    part_type: str,
    max_parts: int,
    max_header_size: int,
    chunk_size: int = 256 * 1024,
) -> StagedParts:
    """Read a multipart body from a file-like ``stream`` (a WSGI request's) and stage its parts."""
    stager = PartStager(boundary, part_type=part_type, max_parts=max_parts, max_header_size=max_header_size)
    return receive_stream(stream, stager, chunk_size=chunk_size)
