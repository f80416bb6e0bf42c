"""C-FIND (Study Root and Patient Root Query/Retrieve Information Models, PS3.4 C.4.1) over the
shared search service.

- :func:`translate`: a request identifier as a :class:`FindRequest`: its level
  (``QueryRetrieveLevel`` STUDY, SERIES or IMAGE; PATIENT too in Patient Root), its matching keys
  (attributes with a value, as the search service's filters, same keywords) and its return keys
  (every attribute named). In Patient Root, below PATIENT, the identifier must carry the patient's
  unique key, Patient ID, with a single value (C.4.1.2.2.1; else 0xA900); it narrows the search.
  Keys the search service cannot match on at that level (or does not know) are returned empty and
  make the pending statuses 0xFF01 (optional keys not supported).
- :func:`response_identifier`: one :class:`~dicom.services.search.Match` as a response identifier.
- :func:`answer_find`: the search as the association's account, with the same access rule and
  masking as QIDO-RS (:func:`dicom.services.search.find` on ``dicomweb.selectors.stored_files``),
  at most ``DICOM_SCP_MAX_FIND_RESULTS`` matches; refusals are audited here.
- :func:`record_find`: the one ``search`` audit row of a C-FIND answered, naming the UIDs sent.

Statuses (PS3.4 C.4.1.1.4, PS3.7 C): 0xFF00/0xFF01 pending, 0x0000 success, 0xB001 the cap was
reached, 0xFE00 cancelled, 0xA900 the identifier does not match the SOP class, 0xC000 a value the
search cannot take, 0xA700 any other failure (the database), 0x0124 the AE may not query (PS3.7's
general "refused: not authorized": C.4.1.1.4 has none of its own). No value of an identifier goes
into a log line, an audit reason or an Error Comment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from audit.models import AuditLog
from audit.services import describe_failure, operation, refused
from dicom.services.errors import DicomServiceError
from dicom.services.search import (
    BY_KEYWORD,
    DEPTH,
    INSTANCE,
    PATIENT,
    SERIES,
    STUDY,
    Match,
    Query,
    SearchQueryError,
    find,
)
from dicomweb.selectors import stored_files

logger = logging.getLogger(__name__)

PENDING = 0xFF00
PENDING_WARNING = 0xFF01
SUCCESS = 0x0000
LIMIT_REACHED = 0xB001
CANCELLED = 0xFE00
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
ERROR_COMMENT_MAX = 64

LEVELS = {"PATIENT": PATIENT, "STUDY": STUDY, "SERIES": SERIES, "IMAGE": INSTANCE}
# The unique key of each level (PS3.4 C.6.1.1, C.6.2.1), named in every response at or below it
# (Patient ID only in Patient Root).
UNIQUE_KEYS = {
    PATIENT: "PatientID",
    STUDY: "StudyInstanceUID",
    SERIES: "SeriesInstanceUID",
    INSTANCE: "SOPInstanceUID",
}
# Attributes of the request that are not keys (PS3.4 C.4.1.1.3.1) or that the node fills itself.
_NOT_KEYS = {"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle", "InstanceAvailability"}


class IdentifierMismatchError(DicomServiceError):
    """The identifier does not fit the information model: no valid Query/Retrieve Level, or in
    Patient Root no single Patient ID below PATIENT (0xA900)."""


class FindNotAllowedError(DicomServiceError):
    status_code = 403


@dataclass(frozen=True)
class FindRequest:
    """A C-FIND identifier as the search service takes it."""

    level: str
    filters: dict[str, str]
    return_keys: list[str]  # keywords, in the identifier's order
    unsupported: bool = False  # some keys were not supported for matching or return
    instance_availability: bool = False
    patient_root: bool = False

    def query(self) -> Query:
        return Query(level=self.level, filters=self.filters, include=self.return_keys)


@dataclass
class FindAnswer:
    """What a C-FIND answers: the pending identifiers, and the final status (with its comment)."""

    status: int
    comment: str = ""
    pending_status: int = PENDING
    identifiers: list[Dataset] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)


def translate(identifier: Dataset, *, patient_root: bool = False) -> FindRequest:
    """The search a Study Root (or Patient Root) C-FIND identifier asks for.

    Raises :class:`IdentifierMismatchError` without a Query/Retrieve Level of STUDY, SERIES or
    IMAGE (or PATIENT, in Patient Root) or, in Patient Root below PATIENT, without a single Patient
    ID (no wildcard), and :class:`~dicom.services.search.SearchQueryError` for an attribute whose value
    cannot be read. A key with a value is a matching key when the search service matches on it at
    this level (relational: keys of upper levels too, unique keys of upper levels narrow the
    search); every other key is a return key, returned empty when not supported.
    """
    raw_level = identifier.get("QueryRetrieveLevel")
    level = LEVELS.get(str(raw_level).strip().upper()) if isinstance(raw_level, str) else None
    if level is None or (level == PATIENT and not patient_root):
        allowed = "PATIENT, STUDY, SERIES or IMAGE" if patient_root else "STUDY, SERIES or IMAGE"
        raise IdentifierMismatchError(f"Query/Retrieve Level is not {allowed}")
    if patient_root and level != PATIENT:
        try:
            text = _text(identifier.get("PatientID")).strip()
        except Exception:
            text = ""
        if not text or any(char in text for char in "\\*?"):
            raise IdentifierMismatchError("Patient Root below PATIENT needs one Patient ID")
    filters: dict[str, str] = {}
    return_keys: list[str] = []
    unsupported = False
    availability = False
    for tag in sorted(identifier.keys()):
        keyword = keyword_for_tag(tag)
        try:
            element = identifier[tag]
            value = element.value
        except Exception:
            raise SearchQueryError(f"{keyword or 'an attribute'}: value cannot be decoded") from None
        if not keyword or element.VR == "SQ":
            unsupported = True  # private attributes and sequence matching are not supported
            continue
        if keyword == "InstanceAvailability":
            availability = True
        if keyword in _NOT_KEYS:
            continue
        return_keys.append(keyword)
        attribute = BY_KEYWORD.get(keyword)
        if attribute is None or DEPTH[attribute.level] > DEPTH[level]:
            unsupported = True
            continue
        text = _text(value)
        if text:
            if attribute.match is None:
                unsupported = True  # returned, not matched on
            else:
                filters[keyword] = text
    return FindRequest(
        level=level,
        filters=filters,
        return_keys=return_keys,
        unsupported=unsupported,
        instance_availability=availability,
        patient_root=patient_root,
    )


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        raise SearchQueryError("a key has a binary value")
    return str(value)


def response_identifier(match: Match, *, request: FindRequest, retrieve_ae_title: str) -> Dataset:
    """``match`` as a C-FIND response identifier: the level, the return keys asked for (empty when
    unknown or withheld), the unique keys of its level and those above, Retrieve AE Title, and
    Specific Character Set ``ISO_IR 192`` when any text is not ASCII."""
    depth = DEPTH[request.level]
    values = dict(match.attributes)
    if depth >= DEPTH[STUDY]:
        values["StudyInstanceUID"] = [match.study]
    if depth >= DEPTH[SERIES]:
        values["SeriesInstanceUID"] = [match.series]
    if depth >= DEPTH[INSTANCE]:
        values["SOPInstanceUID"] = [match.instance]
    top = PATIENT if request.patient_root else STUDY
    unique = [key for lv, key in UNIQUE_KEYS.items() if DEPTH[top] <= DEPTH[lv] <= depth]
    keywords = list(dict.fromkeys([*request.return_keys, *unique]))
    ds = Dataset()
    ds.QueryRetrieveLevel = next(name for name, lv in LEVELS.items() if lv == request.level)
    ds.RetrieveAETitle = retrieve_ae_title
    if request.instance_availability:
        ds.InstanceAvailability = "ONLINE"  # every file searched has its bytes in storage
    unicode = False
    for keyword in keywords:
        found = [v for v in values.get(keyword, []) if v is not None]
        vr = dictionary_VR(tag_for_keyword(keyword))
        if vr == "SQ":
            ds.add_new(keyword, vr, [])
            continue
        unicode = unicode or any(isinstance(v, str) and not v.isascii() for v in found)
        if not found:
            value = None
        elif len(found) == 1:
            value = found[0]
        else:
            value = found
        ds.add_new(keyword, vr, value)
    if unicode:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _comment(error: BaseException) -> str:
    # The project's errors say what is wrong without a value; anything else says nothing more.
    detail = error.detail if isinstance(error, DicomServiceError) else "unable to search"
    return str(detail)[:ERROR_COMMENT_MAX]


def _status(error: BaseException) -> int:
    if isinstance(error, FindNotAllowedError):
        return NOT_AUTHORIZED
    if isinstance(error, IdentifierMismatchError):
        return IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(error, DicomServiceError):
        return UNABLE_TO_PROCESS
    return OUT_OF_RESOURCES


def answer_find(
    *, peer, identifier: Dataset, limit: int | None = None, patient_root: bool = False
) -> FindAnswer:
    """Search for ``identifier`` as ``peer``'s account: the identifiers to send and the final status.

    At most ``limit`` (default ``DICOM_SCP_MAX_FIND_RESULTS``) matches; when more match, the final
    status is 0xB001. A refusal (the AE may not query, an identifier that does not match the SOP
    class, a value the search cannot take) answers no match and writes its ``search`` audit row
    here; an answer with matches is audited by :func:`record_find` once sent. Reads only.
    ``patient_root``: the request came in Patient Root (PatientRootQueryRetrieveInformationModelFind).
    """
    limit = settings.DICOM_SCP_MAX_FIND_RESULTS if limit is None else limit
    actor = peer.actor()

    def describe(error: BaseException) -> tuple[int | None, str]:
        code = describe_failure(error)[0] if isinstance(error, DicomServiceError) else 500
        return code, f"{peer.reason('C-FIND')}: 0x{_status(error):04X} {_comment(error)}"

    try:
        if not peer.may_query:
            raise FindNotAllowedError("this AE may not query")
        request = translate(identifier, patient_root=patient_root)
        page = find(
            user=peer.account,
            files=stored_files(peer.account),
            query=request.query(),
            limit=limit,
            offset=0,
        )
    except Exception as error:  # every failure is a status to the peer, audited
        if not isinstance(error, DicomServiceError):
            logger.exception("C-FIND from %s failed", peer.calling_ae)
        refused(actor=actor, action=AuditLog.Action.SEARCH, error=error, describe=describe)
        return FindAnswer(status=_status(error), comment=_comment(error))
    title = settings.DICOM_SCP_AE_TITLE
    return FindAnswer(
        status=LIMIT_REACHED if page.more else SUCCESS,
        pending_status=PENDING_WARNING if request.unsupported else PENDING,
        identifiers=[response_identifier(m, request=request, retrieve_ae_title=title) for m in page.matches],
        matches=page.matches,
    )


def record_find(*, peer, answer: FindAnswer, sent: int, status: int) -> None:
    """The ``search`` audit row of a C-FIND answered with ``status`` after ``sent`` matches: the
    UIDs of the studies, series and instances sent, the AE titles and status in its reason
    (patients are not named: a Patient ID is patient data)."""
    with operation(actor=peer.actor(), action=AuditLog.Action.SEARCH) as op:
        op.reason = f"{peer.reason('C-FIND')}: 0x{status:04X} {sent} matches"
        sent_matches = answer.matches[:sent]
        op.touch(
            studies=[m.study for m in sent_matches if m.study],
            series=[m.series for m in sent_matches if m.series],
            instances=[m.instance for m in sent_matches if m.instance],
        )
