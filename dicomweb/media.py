"""Accept negotiation and multipart/related writing for DICOMweb resources (PS3.18 8.7).

Clients write Accept headers many ways: ``multipart/related; type="application/dicom"`` quoted or
``type=application/dicom`` unquoted, several media ranges in one header or several headers (which
the server joins with commas), q-values, ``*/*``, ``multipart/related`` without a type (the
resource's default part type). :func:`negotiate` turns a header into the resource's offers the
client accepts, best first, each with the ``transfer-syntax`` the client asked of it; the resource
takes the first it can produce, or raises :class:`NotAcceptableError` (406) when none.

:func:`multipart` writes a ``multipart/related`` body part by part (RFC 2387), so a caller can
stream parts read a block at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from dicom.services.errors import DicomServiceError

MULTIPART = "multipart/related"


class NotAcceptableError(DicomServiceError):
    """Nothing the client accepts (Accept header) can be produced for this resource."""

    status_code = 406


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header: ``type/subtype`` lower-cased, its parameters and q-value."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0
    position: int = 0


@dataclass(frozen=True)
class Offer:
    """A representation a resource can answer with: a single-part type, or multipart of ``part_type``."""

    media_type: str
    part_type: str | None = None

    @property
    def is_multipart(self) -> bool:
        return self.media_type == MULTIPART


@dataclass(frozen=True)
class Match:
    """An offer the client accepts, with the transfer syntax it asked of it (None: not stated, "*": any)."""

    offer: Offer
    transfer_syntax: str | None
    q: float
    params: dict[str, str] = field(default_factory=dict)


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header in the order written; none or empty is ``*/*``.

    Malformed ranges (no slash) and unreadable q-values are skipped rather than refused: a client's
    odd header should not cost it the representations it named correctly.
    """
    if header is None or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for position, element in enumerate(_split(header, ",")):
        pieces = _split(element, ";")
        media_type = pieces[0].strip().lower()
        if media_type == "*":  # some clients send a bare star
            media_type = "*/*"
        if media_type.count("/") != 1:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            value = _unquote(value)
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = -1.0
                continue
            params[name] = value
        if 0.0 <= q <= 1.0:
            ranges.append(MediaRange(media_type, params, q, position))
    return ranges


def _type_matches(pattern: str, media_type: str) -> bool:
    pattern = pattern.strip().lower()
    if pattern in ("*/*", "*"):
        return True
    main, _, sub = pattern.partition("/")
    offered_main, _, offered_sub = media_type.partition("/")
    return main == offered_main and (sub in ("*", "") or sub == offered_sub)


def _matches(media_range: MediaRange, offers: Sequence[Offer]) -> list[Offer]:
    """The offers ``media_range`` accepts, in the resource's order (its first is its default)."""
    if media_range.media_type == "*/*":
        return list(offers)
    if media_range.media_type in (MULTIPART, "multipart/*"):
        part_type = media_range.params.get("type")
        multipart = [offer for offer in offers if offer.is_multipart]
        if part_type is None:
            return multipart[:1] if media_range.media_type == MULTIPART else multipart
        return [offer for offer in multipart if _type_matches(part_type, offer.part_type or "")]
    return [
        offer
        for offer in offers
        if not offer.is_multipart and _type_matches(media_range.media_type, offer.media_type)
    ]


def negotiate(headers: str | Iterable[str] | None, offers: Sequence[Offer]) -> list[Match]:
    """The ``offers`` the Accept header(s) accept, best first (q-value, then the order written).

    A range with ``q=0`` refuses what it names, even if a wider range accepts it. Each match carries
    the ``transfer-syntax`` parameter of the range that matched. An empty list means 406.
    """
    header = headers if headers is None or isinstance(headers, str) else ",".join(headers)
    ranges = parse_accept(header)
    refused = {
        offer for media_range in ranges if media_range.q == 0 for offer in _matches(media_range, offers)
    }
    accepted = sorted((r for r in ranges if r.q > 0), key=lambda r: (-r.q, r.position))
    found: list[Match] = []
    for media_range in accepted:
        for offer in _matches(media_range, offers):
            if offer in refused:
                continue
            found.append(
                Match(offer, media_range.params.get("transfer-syntax"), media_range.q, media_range.params)
            )
    return found


def not_acceptable(what: str, offers: Sequence[Offer]) -> NotAcceptableError:
    """The 406 of a resource, naming what it can answer with."""
    named = ", ".join(
        f'{MULTIPART}; type="{offer.part_type}"' if offer.is_multipart else offer.media_type
        for offer in offers
    )
    return NotAcceptableError(
        f"none of the accepted media types can be produced for {what} (it offers: {named})"
    )


@dataclass(frozen=True)
class Part:
    """One body part: its Content-Type, other headers, and its content as blocks of bytes."""

    content_type: str
    content: Iterable[bytes]
    headers: dict[str, str] = field(default_factory=dict)


def new_boundary() -> str:
    """A boundary no part can contain by chance (a random UUID's 128 bits)."""
    return f"dicomweb-{uuid.uuid4().hex}"


def multipart_content_type(part_type: str, boundary: str) -> str:
    """The response's Content-Type: ``multipart/related; type="..."; boundary=...``."""
    return f'{MULTIPART}; type="{part_type}"; boundary={boundary}'


def multipart(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body of a ``multipart/related`` message of ``parts``, yielded as each part's blocks come.

    Parts are pulled lazily: a part's content is not read before the previous part was sent.
    """
    for part in parts:
        lines = [f"--{boundary}", f"Content-Type: {part.content_type}"]
        lines += [f"{name}: {value}" for name, value in part.headers.items()]
        yield ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        for block in part.content:
            if block:
                yield block
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")
