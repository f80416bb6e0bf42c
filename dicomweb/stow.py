"""STOW-RS (PS3.18 10.5): store the instances of a ``multipart/related; type="application/dicom"`` body.

``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}``. Each part is one Part 10 file,
staged part by part as it arrives (``dicomweb.multipart``: by the web server, ``dicomsite.server``,
or here from ``request.stream`` under WSGI and the test client) and taken in through the same
validation and ingest service as ``/api/dicom/upload`` (``dicom.services.ingest``): one ``upload``
audit row per part, committed with the part's file row, or a failure row when it was refused.

The answer (``application/dicom+json``, PS3.18 Table 10.5.3-1) names the study's Retrieve URL
(0008,1190) when the stored instances are all of one study, each stored instance in the Referenced
SOP Sequence (0008,1199) with its Retrieve URL, and each failed part in the Failed SOP Sequence
(0008,1198) with a Failure Reason (0008,1197):

- ``0xC000`` the part cannot be understood: not DICOM, truncated, malformed, cut short by the end of
  the body, a part whose ``Content-Type`` is not ``application/dicom``, or one de-identification
  refused;
- ``0xA700`` out of resources: the part exceeds ``DICOM_MAX_UPLOAD_SIZE``, or the disk failed;
- ``0x0110`` the part's Study Instance UID is not the path's ``{study}`` (with ``anonymize`` the
  ORIGINAL Study Instance UID is compared, the one the client knows and sent the path for).

A failed item names the part's SOP Class and Instance UIDs when they could be read (from its
dataset, or from its file meta when the dataset cannot be read), else only its Failure Reason.
(``0x0122``, SOP class not supported, is never answered: every SOP class validation accepts is
stored.) Status: 200 all stored, 202 some stored and some failed,
409 none stored and every failure a conflict (0x0110), 400 none stored otherwise. A body that is not
``multipart/related; type="application/dicom"`` is a 415, bad query parameters and a body that is no
multipart body at all (no part, a malformed delimiter, more than ``DICOMWEB_MAX_PARTS`` parts, part
headers over ``DICOMWEB_MAX_PART_HEADER_SIZE``) are a 400, each a ``{"detail"}`` JSON, audited once,
and nothing of the body is kept.

Query parameters: exactly those of the REST upload of a raw file (``anonymize``, ``study_type`` and
the de-identification options, validated by the same serializer). With ``anonymize=true`` each part
is de-identified on the way in as the REST upload does; the answer names the NEW UIDs (those of the
stored, de-identified instance) with Warning Reason (0008,1196) ``0xB000`` (coercion of data
elements).

Idempotency: an instance the user already has (the newest file of its SOP Instance UID that they
may see, as DICOMweb serves it, ``dicomweb.selectors.instances``) with the same SHA-256 of the stored
bytes (the part as received, after its preamble is zeroed) is not stored again: it succeeds and is
referenced, no new row or file (one ``upload`` success row names the existing file). The same UID
with other bytes is stored as a new version, as the REST upload keeps every upload, and DICOMweb
serves the newest. With ``anonymize`` the received bytes are not those stored, so a repeated
anonymizing store stores a new version each time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote

import pydicom
from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from rest_framework.exceptions import ValidationError

from audit.models import AuditLog
from audit.services import Actor, operation, refused
from dicom.api.errors import describe
from dicom.api.serializers import RawUploadSerializer
from dicom.models import DicomFile
from dicom.services.errors import DicomServiceError, FileTooLargeError
from dicom.services.ingest import IngestRequest, ingest_checked_file
from dicomweb import selectors
from dicomweb.base import service_root
from dicomweb.multipart import MultipartError, StagedPart, StagedParts, related_boundary, stage_stream_parts

PART_TYPE = "application/dicom"
DICOM_JSON = "application/dicom+json"

# Failure Reason (0008,1197) and Warning Reason (0008,1196) values, PS3.18 Table 10.5.3-1 / PS3.4 Annex B.
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
COERCION_OF_DATA_ELEMENTS = 0xB000
CONFLICTS = frozenset({PROCESSING_FAILURE, SOP_CLASS_NOT_SUPPORTED})

RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"


class UnsupportedBodyError(DicomServiceError):
    status_code = 415


class MalformedBodyError(DicomServiceError):
    """The body is no readable multipart body, or over a bound of the whole request."""


class StudyMismatchError(DicomServiceError):
    status_code = 409


def store(view, request, *, study: str | None) -> HttpResponse:
    """Store the parts of a STOW-RS request; the ``application/dicom+json`` answer (see the module).

    Refusals of the whole request (415, 400) raise ``DicomServiceError`` or DRF's
    ``ValidationError`` after auditing them once; nothing of the body is kept.
    """
    actor = view.actor()
    parts = getattr(request._request, "staged_parts", None)
    try:
        try:
            boundary = related_boundary(request.META.get("CONTENT_TYPE", ""), part_type=PART_TYPE)
            fields = _upload_fields(request.query_params)
            if parts is None:  # not staged by the web server (WSGI, the test client): read here
                parts = stage_stream_parts(
                    request._request,
                    boundary,
                    part_type=PART_TYPE,
                    max_parts=settings.DICOMWEB_MAX_PARTS,
                    max_header_size=settings.DICOMWEB_MAX_PART_HEADER_SIZE,
                )
            if parts.error:
                raise MalformedBodyError(parts.error)
        except MultipartError as error:
            unsupported = UnsupportedBodyError(error.detail)
            refused(actor=actor, action=AuditLog.Action.UPLOAD, error=unsupported, describe=describe)
            raise unsupported from None
        except (DicomServiceError, ValidationError) as error:
            refused(actor=actor, action=AuditLog.Action.UPLOAD, error=error, describe=describe)
            raise
        outcomes = _store_parts(parts, actor=actor, user=request.user, study=study, data=fields)
    finally:
        if parts is not None:
            parts.close()  # whatever ingest did not consume (the web server closes them again: harmless)
    return _response(outcomes, root=service_root(request), study=study)


def _upload_fields(query) -> dict:
    """The query's upload fields, validated by the REST raw upload's own serializer (its names,
    defaults and errors); raises its ``ValidationError``.

    A query string a client repeats (every request of a batch sends the same) is validated once:
    the result depends on nothing else than the query and ``DICOM_DEID_DEFAULT_OPTIONS``, and
    building the serializer cost a quarter of a millisecond per request.
    """
    key = (
        tuple(sorted((name, tuple(query.getlist(name))) for name in query)),
        tuple(settings.DICOM_DEID_DEFAULT_OPTIONS),
    )
    cached = _VALID_FIELDS.get(key)
    if cached is None:
        serializer = RawUploadSerializer(data=query)
        serializer.is_valid(raise_exception=True)
        cached = dict(serializer.validated_data)
        if len(_VALID_FIELDS) >= _VALID_FIELDS_MAX:
            _VALID_FIELDS.clear()
        _VALID_FIELDS[key] = cached
    return dict(cached)


# Validated query fields by query and default options (values immutable: bools, str, DeidOptions).
_VALID_FIELDS: dict[tuple, dict] = {}
_VALID_FIELDS_MAX = 256


@dataclass(frozen=True)
class _Outcome:
    """What became of one part: a stored (or already stored) file, or a failure reason and the UIDs known."""

    dicom_file: DicomFile | None = None
    reason: int = 0
    sop_class: str = ""
    sop_instance: str = ""


def _store_parts(parts: StagedParts, *, actor: Actor, user, study: str | None, data: dict) -> list[_Outcome]:
    # The UIDs the file meta names, read before ingest consumes the staged file: the idempotency
    # look-up's key, and what a failed item names when the dataset itself cannot be read.
    metas = {part.index: _meta_uids(part.upload.path) for part in parts.parts if part.upload is not None}
    have = {} if data["anonymize"] else _already_stored(parts, user, metas)
    outcomes = []
    for part in parts.parts:
        outcome = _store_part(
            part, actor=actor, study=study, data=data, have=have, meta=metas.get(part.index)
        )
        if outcome.dicom_file is not None and not data["anonymize"]:
            have[outcome.dicom_file.sha256] = outcome.dicom_file  # the same bytes twice in one body
        outcomes.append(outcome)
    return outcomes


def _already_stored(parts: StagedParts, user, metas: dict[int, tuple[str, str]]) -> dict[str, DicomFile]:
    """The instances of ``parts`` the user already has, by SHA-256: a query or two per 500 parts.

    A part's SOP Instance UID is read from its file meta (Media Storage SOP Instance UID), which
    finds it by the indexed UID column; only a file that is the newest of that UID the user may see
    (``dicomweb.selectors.instances``) with the part's very bytes counts. A meta UID that differs
    from the dataset's finds nothing, and the part is stored as any other.
    """
    wanted: dict[str, str] = {}
    for part in parts.parts:
        if part.upload is not None:
            uid = metas[part.index][1]
            if uid:
                wanted[part.upload.sha256] = uid
    found: dict[str, DicomFile] = {}
    items = list(wanted.items())
    for start in range(0, len(items), _LOOKUP_BATCH):
        batch = dict(items[start : start + _LOOKUP_BATCH])
        uids = sorted(set(batch.values()))
        if not _any_file_of(uids):
            continue
        files = selectors.instances(user).filter(sop_instance_uid__in=uids, sha256__in=list(batch))
        found.update({f.sha256: f for f in files if batch.get(f.sha256) == f.sop_instance_uid})
    return found


_LOOKUP_BATCH = 500


def _any_file_of(uids: list[str]) -> bool:
    """Whether any file row has one of these SOP Instance UIDs, whoever may see it.

    Most parts are new instances: this rules them out with one plain look at the indexed column
    before the access rule's query (which decides for the rest) is built. Plain SQL: the ORM's
    building of even an ``exists()`` cost more than the look itself on every one-instance request.
    """
    table = connection.ops.quote_name(DicomFile._meta.db_table)
    column = connection.ops.quote_name(DicomFile._meta.get_field("sop_instance_uid").column)
    marks = ", ".join(["%s"] * len(uids))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE {column} IN ({marks}) LIMIT 1", uids)  # noqa: S608
        return cursor.fetchone() is not None


# File meta elements with a 4-byte length after 2 reserved bytes (PS3.5 7.1.2); group 0002 is always
# explicit VR little endian.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_META_BYTES = 4096


def _meta_uids(path) -> tuple[str, str]:
    """The Media Storage SOP Class and Instance UIDs (0002,0002), (0002,0003) of a Part 10 file.

    Empty when the file is no Part 10 file or its meta group is unreadable (validation says why).
    A cheap walk of the meta group's first bytes, not pydicom's reader: it runs for every part.
    """
    with open(path, "rb") as handle:
        data = handle.read(_META_BYTES)
    found = {0x0002: "", 0x0003: ""}
    if data[128:132] != b"DICM":
        return "", ""
    pos = 132
    while pos + 8 <= len(data):
        group, element = (
            int.from_bytes(data[pos : pos + 2], "little"),
            int.from_bytes(data[pos + 2 : pos + 4], "little"),
        )
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length, pos = int.from_bytes(data[pos + 8 : pos + 12], "little"), pos + 12
        else:
            length, pos = int.from_bytes(data[pos + 6 : pos + 8], "little"), pos + 8
        if element in found and pos + length <= len(data):
            found[element] = _uid_text(data[pos : pos + length])
            if element == 0x0003:
                break
        pos += length
    return found[0x0002], found[0x0003]


_UID_TEXT = re.compile(r"^[0-9.]{1,64}$")


def _uid_text(value: bytes) -> str:
    """A UID's value, or empty: only digits and dots ever reach a query or an answer."""
    text = value.rstrip(b"\x00 ").decode("ascii", "replace")
    return text if _UID_TEXT.match(text) else ""


def _store_part(
    part: StagedPart,
    *,
    actor: Actor,
    study: str | None,
    data: dict,
    have: dict[str, DicomFile],
    meta: tuple[str, str] | None,
) -> _Outcome:
    if part.upload is None:
        reason = OUT_OF_RESOURCES if part.failure_kind == "resources" else CANNOT_UNDERSTAND
        status = 413 if reason == OUT_OF_RESOURCES else 400
        refused(actor=actor, action=AuditLog.Action.UPLOAD, error=_PartError(part.failure, status))
        return _Outcome(reason=reason)
    upload = part.upload
    existing = have.get(upload.sha256)
    if existing is not None and (study is None or existing.study_instance_uid == study):
        with operation(actor=actor, action=AuditLog.Action.UPLOAD, file_id=existing.id) as op:
            op.succeed(reason="already stored (same SOP Instance UID and bytes): not stored again")
        return _Outcome(dicom_file=existing)
    seen = {"sop_class": meta[0], "sop_instance": meta[1]} if meta else {}

    def check(header: pydicom.Dataset) -> None:
        seen["sop_class"] = _uid_text(str(header.get("SOPClassUID", "") or "").encode()) or seen.get(
            "sop_class", ""
        )
        seen["sop_instance"] = _uid_text(str(header.get("SOPInstanceUID", "") or "").encode()) or seen.get(
            "sop_instance", ""
        )
        if study is not None and str(header.get("StudyInstanceUID", "") or "") != study:
            raise StudyMismatchError(
                "the instance's Study Instance UID is not the study of the request's path"
            )

    try:
        dicom_file = ingest_checked_file(
            request=IngestRequest.of_upload(staged_path=upload.path, sha256=upload.sha256, fields=data),
            actor=actor,
            check=check,
        )
    except StudyMismatchError:
        return _Outcome(reason=PROCESSING_FAILURE, **seen)
    except FileTooLargeError:
        return _Outcome(reason=OUT_OF_RESOURCES, **seen)
    except DicomServiceError:
        return _Outcome(reason=CANNOT_UNDERSTAND, **seen)
    except OSError:  # the disk (full, unavailable): audited by ingest as an internal error
        return _Outcome(reason=OUT_OF_RESOURCES, **seen)
    return _Outcome(dicom_file=dicom_file)


class _PartError(DicomServiceError):
    """A part refused before it reached the ingest service (audited as its refusal)."""

    def __init__(self, detail: str, status_code: int) -> None:
        super().__init__(detail)
        self.status_code = status_code


def _uid(value: str) -> dict:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _segment(uid: str) -> str:
    # A stored UID is what its file said: quoted, it can never change the URL's shape.
    return quote(uid, safe=".")


def _response(outcomes: list[_Outcome], *, root: str, study: str | None) -> HttpResponse:
    referenced, failed, studies = [], [], []
    for outcome in outcomes:
        dicom_file = outcome.dicom_file
        if dicom_file is None:
            item = {FAILURE_REASON: {"vr": "US", "Value": [outcome.reason]}}
            if outcome.sop_class:
                item[REFERENCED_SOP_CLASS_UID] = _uid(outcome.sop_class)
            if outcome.sop_instance:
                item[REFERENCED_SOP_INSTANCE_UID] = _uid(outcome.sop_instance)
            failed.append(dict(sorted(item.items())))
            continue
        if dicom_file.study_instance_uid not in studies:
            studies.append(dicom_file.study_instance_uid)
        url = (
            f"{root}/studies/{_segment(dicom_file.study_instance_uid)}"
            f"/series/{_segment(dicom_file.series_instance_uid)}/instances/{_segment(dicom_file.sop_instance_uid)}"
        )
        item = {
            REFERENCED_SOP_CLASS_UID: _uid(dicom_file.metadata.get("sop_class_uid") or ""),
            REFERENCED_SOP_INSTANCE_UID: _uid(dicom_file.sop_instance_uid),
            RETRIEVE_URL: {"vr": "UR", "Value": [url]},
        }
        if dicom_file.anonymized:
            item[WARNING_REASON] = {"vr": "US", "Value": [COERCION_OF_DATA_ELEMENTS]}
        referenced.append(dict(sorted(item.items())))
    body: dict = {}
    if len(studies) == 1:
        body[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{root}/studies/{_segment(studies[0])}"]}
    if failed:
        body[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
    body[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": referenced} if referenced else {"vr": "SQ"}
    if not failed:
        status = 200
    elif referenced:
        status = 202
    elif all(outcome.reason in CONFLICTS for outcome in outcomes):
        status = 409
    else:
        status = 400
    return HttpResponse(json.dumps(body), status=status, content_type=DICOM_JSON)
