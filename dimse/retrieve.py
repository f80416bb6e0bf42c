"""C-MOVE and C-GET (PS3.4 C.4.2, C.4.3), Study Root and Patient Root, free of the network.

- :func:`translate`: a request identifier as a :class:`RetrieveRequest`: its level (PATIENT,
  STUDY, SERIES or IMAGE; PATIENT only in Patient Root) and the unique keys of that level and the
  levels above (C.4.2.2.1: one value above the level, a list of UIDs at it).
- :func:`plan_retrieve`: what a request earns: a :class:`RetrievePlan` (the instances to send
  and, for C-MOVE, the destination) or a :class:`Refusal` (its status, audited here).
- :func:`read_instance`: one planned instance read from storage as stored, for pynetdicom to send.
- :class:`SubOperations`: the C-STORE sub-operations' outcomes, counted from their responses.
- :func:`record_retrieve`: the one ``download`` audit row of a retrieve that sent sub-operations.

Access: the instances are those the account may get through WADO-RS: one file per SOP Instance UID,
the newest the account may see (``dicomweb.selectors.instances``, on ``dicom.access``); when one of
them is an original whose patient data the account may not see, the whole retrieve is refused
(0x0124), as WADO-RS refuses it (403). A Patient ID matches only de-identified files for such an
account (no oracle on an original's real value, as the search service does).

Decisions where the standard leaves a choice:

- Only unique keys may carry a value (C.4.2.2.1); another key with a value is 0xA900, not ignored
  (ignoring it would send more than was asked for). Empty attributes are ignored.
- C-MOVE destinations are enabled :class:`~dimse.models.ApplicationEntity` rows with a host and a
  port (any account's: the destination receives, it does not act); else 0xA801. The association to
  it is requested by ``DICOM_SCP_AE_TITLE`` with one presentation context per SOP class and stored
  transfer syntax, plus Explicit and Implicit VR Little Endian for uncompressed files.
- Instances are sent as stored: the file's dataset read with pydicom (pixel data undecoded) and
  encoded back by pynetdicom in the accepted transfer syntax, which gives the stored bytes when it is
  the stored syntax. An uncompressed file may go in another uncompressed syntax the peer accepted
  (pynetdicom's conversion); a compressed file whose syntax the peer did not accept is a failed
  sub-operation, nothing is transcoded.
- pynetdicom associates with a known move destination before it reads a failure status from the
  handler, so a refusal of a C-MOVE to a known destination (0x0124, 0xA900) opens and releases an
  association to it without sending anything; to an unknown destination it is 0xA801.
- At most 65535 instances (the counts are US): more is 0xA701.
- A retrieve through the de-identifying called AE title (``DICOM_SCP_DEID_AE_TITLE``) sends the
  same stored files: de-identification applies on the way in, not on the way out. C-FIND names
  ``DICOM_SCP_AE_TITLE`` as the Retrieve AE Title.
- A refused C-GET reports one failed sub-operation (pynetdicom reads a failure status only after
  a number of sub-operations of at least one).

Statuses: 0xFF00 pending, 0x0000 success, 0xB000 some sub-operations failed, 0xA702 all failed,
0xFE00 cancelled, 0x0124 not authorized, 0xA900 identifier, 0xA801 destination, 0xA701 too many or
the database, 0xC000 any other failure. No value of an identifier goes into a log line, an audit
reason or an Error Comment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.core.files.storage import default_storage
from django.db.models import Q
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, STORAGE_SERVICE_CLASS_STATUS

from audit.models import AuditLog
from audit.services import describe_failure, operation, refused
from dicom import access
from dicom.models import DicomFile
from dicom.services.errors import DicomServiceError
from dicom.services.search import INSTANCE, PATIENT, SERIES, STUDY
from dicomweb.selectors import instances
from dimse.models import ApplicationEntity

logger = logging.getLogger(__name__)

PENDING = 0xFF00
SUCCESS = 0x0000
SUB_OPERATIONS_FAILED = 0xB000  # warning: complete, one or more failures
CANCELLED = 0xFE00
NOT_AUTHORIZED = 0x0124
UNABLE_TO_CALCULATE_MATCHES = 0xA701
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
ERROR_COMMENT_MAX = 64
MAX_SUB_OPERATIONS = 65535
MAX_CONTEXTS = 128  # presentation context IDs are odd numbers 1 to 255 (PS3.8 9.3.2.2)

LEVELS = {"PATIENT": PATIENT, "STUDY": STUDY, "SERIES": SERIES, "IMAGE": INSTANCE}
HIERARCHY = (PATIENT, STUDY, SERIES, INSTANCE)
UNIQUE_KEYS = {
    PATIENT: "PatientID",
    STUDY: "StudyInstanceUID",
    SERIES: "SeriesInstanceUID",
    INSTANCE: "SOPInstanceUID",
}
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}
_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian}


class RetrieveError(DicomServiceError):
    """A retrieve refused before any sub-operation; ``dimse_status`` is its C-MOVE/C-GET status."""

    dimse_status = UNABLE_TO_PROCESS


class RetrieveNotAllowedError(RetrieveError):
    status_code = 403
    dimse_status = NOT_AUTHORIZED


class RetrieveIdentifierError(RetrieveError):
    dimse_status = IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


class MoveDestinationUnknownError(RetrieveError):
    status_code = 404
    dimse_status = MOVE_DESTINATION_UNKNOWN


class TooManyMatchesError(RetrieveError):
    status_code = 413
    dimse_status = UNABLE_TO_CALCULATE_MATCHES


@dataclass(frozen=True)
class RetrieveRequest:
    """The instances an identifier names: its level and the unique keys given (empty: not given)."""

    level: str
    patient_id: str = ""
    studies: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class Destination:
    """A C-MOVE destination: the AE title the association calls, where it listens."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class Instance:
    """One instance to send: the file it is read from and the UIDs that name it."""

    file_id: str
    storage_key: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class RetrievePlan:
    """A retrieve admitted: who asked, through which service, the instances in UID order."""

    peer: object  # dimse.services.Peer
    service: str  # "C-MOVE" or "C-GET"
    instances: list[Instance]
    destination: Destination | None = None

    @property
    def reason(self) -> str:
        reason = self.peer.reason(self.service)
        return f"{reason} to {self.destination.ae_title}" if self.destination else reason

    def presentation_contexts(self) -> list[PresentationContext]:
        """The contexts a C-MOVE proposes to its destination: each SOP class in each stored syntax,
        and in Explicit and Implicit VR Little Endian when a file of it is uncompressed. At most 128
        (PS3.8's limit): the instances of a context left out are failed sub-operations."""
        wanted: dict[str, list[str]] = {}
        for item in self.instances:
            syntaxes = wanted.setdefault(item.sop_class_uid, [])
            if item.transfer_syntax_uid not in syntaxes:
                syntaxes.append(item.transfer_syntax_uid)
        contexts = []
        for sop_class, syntaxes in sorted(wanted.items()):
            for syntax in syntaxes:
                if syntax not in _UNCOMPRESSED:
                    contexts.append(build_context(sop_class, [syntax]))
            if any(syntax in _UNCOMPRESSED for syntax in syntaxes):
                uncompressed = [s for s in syntaxes if s in _UNCOMPRESSED]
                offered = list(dict.fromkeys([*uncompressed, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
                contexts.append(build_context(sop_class, offered))
        return contexts[:MAX_CONTEXTS]


@dataclass(frozen=True)
class Refusal:
    """A retrieve refused: its final status and Error Comment (already audited); a C-MOVE's
    destination when it is known (pynetdicom associates with it before it sends the status)."""

    status: int
    comment: str
    destination: Destination | None = None


@dataclass
class SubOperations:
    """The outcomes of the C-STORE sub-operations, from the C-STORE responses as they arrive
    (:meth:`on_response`, an ``EVT_DIMSE_RECV`` handler) and the instances yielded (:meth:`sending`).
    An instance yielded without a response (no presentation context for it, the peer gone) failed."""

    attempted: list[Instance] = field(default_factory=list)
    completed: set[str] = field(default_factory=set)
    warning: set[str] = field(default_factory=set)

    def sending(self, item: Instance) -> None:
        self.attempted.append(item)

    def on_response(self, event) -> None:
        command = getattr(event.message, "command_set", None)
        if command is None or command.get("CommandField") != 0x8001:  # C-STORE-RSP
            return
        uid = str(command.get("AffectedSOPInstanceUID", ""))
        # Categorised as pynetdicom counts them for its responses (an unknown status is a failure).
        category = STORAGE_SERVICE_CLASS_STATUS.get(command.get("Status"), ("Failure",))[0]
        if category == STATUS_SUCCESS:
            self.completed.add(uid)
        elif category == STATUS_WARNING:
            self.warning.add(uid)

    def sent(self) -> list[Instance]:
        """The instances the peer took (stored, or stored with a warning)."""
        return [i for i in self.attempted if i.sop_instance_uid in self.completed | self.warning]

    def counts(self) -> tuple[int, int, int]:
        """(completed, failed, warning) among the instances yielded."""
        completed = sum(1 for i in self.attempted if i.sop_instance_uid in self.completed)
        warning = sum(1 for i in self.attempted if i.sop_instance_uid in self.warning)
        return completed, len(self.attempted) - completed - warning, warning

    def final_status(self, *, cancelled: bool = False) -> int:
        """The final status pynetdicom answers with these outcomes (PS3.4 C.4.2.1.5)."""
        if cancelled:
            return CANCELLED
        _, failed, warning = self.counts()
        if not failed and not warning:
            return SUCCESS
        if failed == len(self.attempted):
            return UNABLE_TO_PERFORM_SUB_OPERATIONS
        return SUB_OPERATIONS_FAILED


def translate(identifier: Dataset, *, patient_root: bool) -> RetrieveRequest:
    """The instances a C-MOVE or C-GET identifier names.

    Raises :class:`RetrieveIdentifierError` (0xA900) for a level the information model has not
    (PATIENT in Study Root), a unique key of a level above the retrieve level missing or with more
    than one value, the level's own unique key missing, or any other key with a value.
    """
    raw_level = identifier.get("QueryRetrieveLevel")
    level = LEVELS.get(str(raw_level).strip().upper()) if isinstance(raw_level, str) else None
    if level is None or (level == PATIENT and not patient_root):
        allowed = "PATIENT, STUDY, SERIES or IMAGE" if patient_root else "STUDY, SERIES or IMAGE"
        raise RetrieveIdentifierError(f"Query/Retrieve Level is not {allowed}")
    top = 0 if patient_root else 1
    depth = HIERARCHY.index(level)
    wanted = {UNIQUE_KEYS[lv]: lv for lv in HIERARCHY[top : depth + 1]}
    values: dict[str, tuple[str, ...]] = {}
    for tag in sorted(identifier.keys()):
        try:
            element = identifier[tag]
            found = _values(element.value)
        except Exception:
            raise RetrieveIdentifierError("an attribute cannot be decoded") from None
        keyword = element.keyword
        if keyword in _NOT_KEYS or not found:
            continue
        if keyword not in wanted:
            raise RetrieveIdentifierError(
                f"{keyword or 'a private attribute'} is not a unique key of this level"
            )
        values[keyword] = found
    for keyword, key_level in wanted.items():
        found = values.get(keyword, ())
        if not found:
            raise RetrieveIdentifierError(f"{keyword} is missing")
        if key_level != level and len(found) > 1:
            raise RetrieveIdentifierError(f"{keyword} has more than one value above the retrieve level")
        if key_level == PATIENT and len(found) > 1:
            raise RetrieveIdentifierError("PatientID has more than one value")
    return RetrieveRequest(
        level=level,
        patient_id=values.get("PatientID", ("",))[0],
        studies=values.get("StudyInstanceUID", ()),
        series=values.get("SeriesInstanceUID", ()),
        instances=values.get("SOPInstanceUID", ()),
    )


def _values(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, bytes):
        raise ValueError("binary")
    items = value if isinstance(value, MultiValue | list | tuple) else [value]
    return tuple(text for text in (str(v).strip() for v in items) if text)


def move_destination(ae_title: str) -> Destination:
    """The enabled application entity called ``ae_title`` with a host and port, as a destination;
    :class:`MoveDestinationUnknownError` otherwise."""
    entity = (
        ApplicationEntity.objects.filter(ae_title=ae_title.strip(), enabled=True, port__isnull=False)
        .exclude(host="")
        .first()
    )
    if entity is None:
        raise MoveDestinationUnknownError("move destination is not a known AE with a host and port")
    return Destination(ae_title=entity.ae_title, host=entity.host, port=entity.port)


def matching_instances(user, request: RetrieveRequest, *, deidentified_only: bool = False) -> list[Instance]:
    """The instances ``request`` names that ``user`` may retrieve, in UID order; with
    ``deidentified_only`` (a retrieve through the de-identifying AE title) de-identified files only.

    :class:`RetrieveNotAllowedError` when one is an original whose patient data ``user`` may not
    see (as WADO-RS); :class:`TooManyMatchesError` beyond 65535.
    """
    files = instances(user)
    if deidentified_only:
        files = files.filter(anonymized=True)
    if request.patient_id:
        condition = Q(patient_id=request.patient_id)
        if not access.may_see_patient_data(user, DicomFile(anonymized=False)):
            condition &= Q(anonymized=True)
        files = files.filter(condition)
    for column, uids in (
        ("study_instance_uid", request.studies),
        ("series_instance_uid", request.series),
        ("sop_instance_uid", request.instances),
    ):
        if uids:
            files = files.filter(**{f"{column}__in": uids})
    files = files.order_by("study_instance_uid", "series_instance_uid", "sop_instance_uid")
    found = list(files[: MAX_SUB_OPERATIONS + 1])
    if len(found) > MAX_SUB_OPERATIONS:
        raise TooManyMatchesError(f"more than {MAX_SUB_OPERATIONS} instances match")
    if not all(access.may_see_patient_data(user, f) for f in found):
        raise RetrieveNotAllowedError("originals with patient data need dicom.view_phi")
    return [
        Instance(
            file_id=str(f.id),
            storage_key=f.storage_key,
            sop_class_uid=f.sop_class_uid or str(f.metadata.get("sop_class_uid", "")),
            sop_instance_uid=f.sop_instance_uid,
            study_instance_uid=f.study_instance_uid,
            series_instance_uid=f.series_instance_uid,
            transfer_syntax_uid=f.transfer_syntax_uid or ExplicitVRLittleEndian,
        )
        for f in found
    ]


def _status(error: BaseException) -> int:
    if isinstance(error, RetrieveError):
        return error.dimse_status
    if isinstance(error, DicomServiceError):
        return UNABLE_TO_PROCESS
    return UNABLE_TO_CALCULATE_MATCHES  # the database


def _comment(error: BaseException) -> str:
    detail = error.detail if isinstance(error, DicomServiceError) else "unable to find the instances"
    return str(detail)[:ERROR_COMMENT_MAX]


def plan_retrieve(
    *,
    peer,
    service: str,
    identifier: Dataset | None,
    patient_root: bool,
    move_destination_title: str | None = None,
) -> RetrievePlan | Refusal:
    """Whether ``peer`` may retrieve what ``identifier`` names, and what is sent (reads only).

    ``service`` is ``"C-MOVE"`` (with ``move_destination_title``) or ``"C-GET"``; ``identifier``
    None is one that could not be decoded (0xC000). Checks, in this
    order: the AE may retrieve (``may_retrieve``), the move destination, the identifier, the
    instances. A refusal writes its ``download`` audit row here (the AE titles, the destination and
    the status in its reason); a plan is audited by :func:`record_retrieve` once sent.
    """
    reason = peer.reason(service)
    if move_destination_title is not None:
        reason = f"{reason} to {move_destination_title.strip()}"

    def describe(error: BaseException) -> tuple[int | None, str]:
        code = describe_failure(error)[0] if isinstance(error, DicomServiceError) else 500
        return code, f"{reason}: 0x{_status(error):04X} {_comment(error)}"

    destination = None
    try:
        if move_destination_title is not None:
            destination = move_destination(move_destination_title)
        if not peer.may_retrieve:
            raise RetrieveNotAllowedError("this AE may not retrieve")
        if identifier is None:
            raise RetrieveError("identifier cannot be decoded")
        request = translate(identifier, patient_root=patient_root)
        # Called as the de-identifying AE title, the node hands out only what it de-identified.
        found = matching_instances(peer.account, request, deidentified_only=peer.deidentify)
    except Exception as error:  # every failure is a status to the peer, audited
        if not isinstance(error, DicomServiceError):
            logger.exception("%s from %s failed", service, peer.calling_ae)
        refused(actor=peer.actor(), action=AuditLog.Action.DOWNLOAD, error=error, describe=describe)
        return Refusal(status=_status(error), comment=_comment(error), destination=destination)
    return RetrievePlan(peer=peer, service=service, instances=found, destination=destination)


def read_instance(item: Instance) -> Dataset:
    """The dataset of ``item``'s file, read from storage (pixel data not decoded): what is sent."""
    with default_storage.open(item.storage_key, "rb") as handle:
        dataset = dcmread(handle)
    if not dataset.file_meta.get("TransferSyntaxUID"):
        dataset.file_meta.TransferSyntaxUID = UID(item.transfer_syntax_uid)
    return dataset


def record_retrieve(
    *, plan: RetrievePlan, outcomes: SubOperations, cancelled: bool = False, status: int | None = None
) -> int:
    """The ``download`` audit row of a retrieve whose sub-operations ran; its final status.

    The row names the instances the peer took (and their series and studies), the AE titles, the
    destination, the final status (``status``, else the one ``outcomes`` earn) and the
    sub-operation counts in its reason. A success row unless no sub-operation completed.
    """
    if status is None:
        status = outcomes.final_status(cancelled=cancelled)
    completed, failed, warning = outcomes.counts()
    remaining = len(plan.instances) - len(outcomes.attempted)
    reason = (
        f"{plan.reason}: 0x{status:04X} {completed} completed, {failed} failed, "
        f"{warning} warning, {remaining} remaining"
    )
    sent = outcomes.sent()
    with operation(actor=plan.peer.actor(), action=AuditLog.Action.DOWNLOAD) as op:
        if plan.instances and not sent:
            op.refuse(status_code=502, reason=reason)  # the peer took none of them
        else:
            op.reason = reason
        op.touch(
            studies=[i.study_instance_uid for i in sent],
            series=[i.series_instance_uid for i in sent],
            instances=[i.sop_instance_uid for i in sent],
        )
    return status
