"""Our STOW-RS sender (PS3.18 10.5): one stored file POSTed to a DICOMweb server's ``/studies``.

Plain ``http.client`` (no new dependency): one request, ``multipart/related;
type="application/dicom"`` with the stored bytes as its one part, ``Accept: application/dicom+json``, the file streamed from storage,
bounded by ``DICOM_STOW_TIMEOUT_SECONDS``. Success is 200, or 202 whose answer lists no failed
instance; with a DICOM JSON answer, the Referenced SOP Sequence (0008,1199) must not be empty.
Every other outcome is a ``SendError`` naming the HTTP status or the Failure Reason (0008,1197),
never the response body (a server's message may quote values) nor the authorization header.
"""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import urlsplit

from django.conf import settings

from dimse.scu import SendError

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
MAX_ANSWER = 1024 * 1024
CHUNK = 1024 * 1024


def multipart_parts(boundary: str) -> tuple[bytes, bytes]:
    """What goes before and after the one ``application/dicom`` part of a ``multipart/related`` body."""
    return (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
        f"\r\n--{boundary}--\r\n".encode(),
    )


def _body(source: BinaryIO, head: bytes, tail: bytes) -> Iterator[bytes]:
    yield head
    while chunk := source.read(CHUNK):
        yield chunk
    yield tail


def send_stow(*, source: BinaryIO, size: int, url: str, authorization: str = "") -> int:
    """POST the Part 10 file ``source`` (``size`` bytes, read in chunks as it is sent, never held
    whole) to ``{url}/studies``; return the HTTP status (200 or 202).

    Raises ``SendError`` for a bad URL, a connection that fails or times out, another status, or
    an answer that says the instance failed.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SendError("the destination's URL is not an http(s) URL")
    boundary = f"stow-{uuid.uuid4().hex}"
    head, tail = multipart_parts(boundary)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary="{boundary}"',
        "Content-Length": str(len(head) + size + len(tail)),
        "Accept": "application/dicom+json",
    }
    if authorization:
        headers["Authorization"] = authorization
    timeout = settings.DICOM_STOW_TIMEOUT_SECONDS
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    where = f"STOW-RS to {parts.hostname}"
    try:
        conn.request(
            "POST", parts.path.rstrip("/") + "/studies", body=_body(source, head, tail), headers=headers
        )
        response = conn.getresponse()
        answer = response.read(MAX_ANSWER)
        status, media_type = response.status, response.getheader("Content-Type", "")
    except (OSError, http.client.HTTPException) as error:
        raise SendError(f"{where} failed: {type(error).__name__}") from None
    finally:
        conn.close()
    if status not in (200, 202):
        raise SendError(f"{where} answered HTTP {status}")
    if "json" not in media_type.lower() or not answer.strip():
        return status
    try:
        outcome = json.loads(answer)
    except ValueError:
        raise SendError(f"{where} answered HTTP {status} with malformed JSON") from None
    if not isinstance(outcome, dict):
        raise SendError(f"{where} answered HTTP {status} with an unexpected JSON body")
    failed = (outcome.get(FAILED_SOP_SEQUENCE) or {}).get("Value") or []
    if failed:
        reason = ((failed[0] or {}).get(FAILURE_REASON) or {}).get("Value") or ["?"]
        code = reason[0]
        text = f"0x{code:04X}" if isinstance(code, int) else "unknown"
        raise SendError(f"{where} refused the instance (failure reason {text})")
    if not ((outcome.get(REFERENCED_SOP_SEQUENCE) or {}).get("Value") or []):
        raise SendError(f"{where} answered HTTP {status} but stored no instance")
    return status
