"""The DIMSE node's decisions, free of the network: who may associate, and storing one C-STORE.

- :func:`admit`: an association request's calling and called AE titles and peer address, checked
  against the application entities: a :class:`Peer` (the account the association acts as, what it
  may do) or a :class:`Rejection` (the A-ASSOCIATE-RJ diagnostic).
- :func:`store_instance`: one received dataset written as a Part 10 file to staging (through the
  one writer of received bytes, ``dicom.uploads.StagingWriter``) and taken in by the ingest service
  the REST upload uses, as the association's account; the C-STORE status it earns
  (:func:`store_status`).

Nothing here takes a value from a dataset into a log line, an audit reason or an Error Comment.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from io import BytesIO

import pydicom
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import DatabaseError
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from audit.models import AuditLog
from audit.services import Actor, describe_failure, operation, refused
from dicom.models import DicomFile
from dicom.services.bulk import operator_account
from dicom.services.deid import DeidOptions
from dicom.services.errors import DicomServiceError, FileTooLargeError, InvalidDicomError
from dicom.services.ingest import IngestRequest, ingest_checked_file
from dicom.uploads import PREAMBLE_SIZE, StagingWriter
from dimse.models import ApplicationEntity

logger = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 Table B.2-1, PS3.7 Annex C).
SUCCESS = 0x0000
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
ERROR_COMMENT_MAX = 64  # Error Comment (0000,0902) is LO

# A-ASSOCIATE-RJ diagnostics of the service user (PS3.8 9.3.4): result 1 (permanent), source 1.
CALLING_AE_NOT_RECOGNIZED = 0x03
CALLED_AE_NOT_RECOGNIZED = 0x07


# A UID (PS3.5 9.1): numeric components separated by dots, at most 64 characters.
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
UID_KEYS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
REQUIRED_UID_KEYS = ("SOPClassUID", "SOPInstanceUID")


def is_uid(value: str) -> bool:
    return len(value) <= 64 and UID_PATTERN.fullmatch(value) is not None


class SopInstanceMismatchError(DicomServiceError):
    """The dataset is not the instance (or class) the C-STORE request announced."""

    status_code = 409


class StoreNotAllowedError(DicomServiceError):
    status_code = 403


@dataclass(frozen=True)
class Peer:
    """An admitted association: who acts, and whether it stores originals or de-identifies."""

    account: AbstractBaseUser
    calling_ae: str
    called_ae: str
    address: str
    may_store: bool
    deidentify: bool
    may_query: bool = False
    may_retrieve: bool = False

    def reason(self, service: str) -> str:
        # AE titles name devices, not patients: safe in an audit reason.
        return f"DIMSE {service} {self.calling_ae} -> {self.called_ae}"

    @property
    def audit_reason(self) -> str:
        return self.reason("C-STORE")

    def actor(self) -> Actor:
        return Actor(user=self.account, client_address=self.address)


@dataclass(frozen=True)
class Rejection:
    diagnostic: int
    reason: str


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def admit(*, calling_ae: str, called_ae: str, address: str) -> Peer | Rejection:
    """Whether an association request is accepted, and as whom.

    The called AE title must be ``DICOM_SCP_AE_TITLE`` (store as received) or
    ``DICOM_SCP_DEID_AE_TITLE`` (store de-identified). The calling AE title must be an enabled
    :class:`ApplicationEntity` whose account is active: the association acts as that account with
    its ``may_store``, ``may_query`` and ``may_retrieve``. With ``DICOM_SCP_TRUST_LOOPBACK``
    (embedded mode only) an unregistered calling AE from a loopback address is accepted as
    ``DICOM_SYSTEM_USERNAME`` (created if missing) and may store, query and retrieve (that
    account's files, to registered move destinations only). AE titles compare without their padding spaces.
    """
    calling_ae, called_ae = calling_ae.strip(), called_ae.strip()
    if called_ae not in (settings.DICOM_SCP_AE_TITLE, settings.DICOM_SCP_DEID_AE_TITLE):
        return Rejection(CALLED_AE_NOT_RECOGNIZED, "called AE title is not this node's")
    deidentify = called_ae == settings.DICOM_SCP_DEID_AE_TITLE
    entity = (
        ApplicationEntity.objects.select_related("account")
        .filter(ae_title=calling_ae, enabled=True, account__is_active=True)
        .first()
    )
    if entity is not None:
        return Peer(
            account=entity.account,
            calling_ae=calling_ae,
            called_ae=called_ae,
            address=address,
            may_store=entity.may_store,
            deidentify=deidentify,
            may_query=entity.may_query,
            may_retrieve=entity.may_retrieve,
        )
    if settings.DICOM_SCP_TRUST_LOOPBACK and is_loopback(address):
        return Peer(
            account=operator_account(username=None),
            calling_ae=calling_ae,
            called_ae=called_ae,
            address=address,
            may_store=True,
            deidentify=deidentify,
            may_query=True,
            may_retrieve=True,
        )
    return Rejection(CALLING_AE_NOT_RECOGNIZED, "calling AE title is not a registered, enabled AE")


def deid_options() -> DeidOptions:
    """The options the de-identifying AE title applies (``DICOM_SCP_DEID_OPTIONS``); ``ValueError``
    for an unknown name or two alternatives."""
    return DeidOptions.from_names(settings.DICOM_SCP_DEID_OPTIONS)


def store_status(error: BaseException | None) -> tuple[int, str]:
    """The C-STORE status and Error Comment of an outcome (``None``: stored).

    Comments come from the project's errors, whose ``detail`` says what is wrong and never a value;
    anything else is a bug and says only its type.
    """
    if error is None:
        return SUCCESS, ""
    if isinstance(error, StoreNotAllowedError):
        status = NOT_AUTHORIZED
    elif isinstance(error, SopInstanceMismatchError):
        status = DATASET_DOES_NOT_MATCH_SOP_CLASS
    elif isinstance(error, FileTooLargeError | OSError | DatabaseError | MemoryError):
        status = OUT_OF_RESOURCES
    elif isinstance(error, DicomServiceError):
        status = CANNOT_UNDERSTAND
    else:
        status = PROCESSING_FAILURE
    if isinstance(error, DicomServiceError):
        comment = error.detail
    elif isinstance(error, OSError | DatabaseError | MemoryError):
        comment = "out of resources"
    else:
        comment = describe_failure(error)[1]
    return status, comment[:ERROR_COMMENT_MAX]


def stage_dataset(*, dataset: BytesIO, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str):
    """Write a received dataset (its encoded bytes, not decoded) as a Part 10 file to staging.

    The file meta is built from the request: the SOP class and instance it announced and the
    accepted transfer syntax. Returns the ``StagedUpload`` (closing it removes the file);
    ``FileTooLargeError`` beyond ``DICOM_MAX_UPLOAD_SIZE``, nothing left staged.
    """
    meta = BytesIO()
    meta.write(bytes(PREAMBLE_SIZE) + b"DICM")
    file_meta = pydicom.dataset.FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    file_meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    write_file_meta_info(meta, file_meta)
    writer = StagingWriter()
    try:
        writer.write(meta.getvalue())
        view = dataset.getbuffer()
        try:
            for start in range(0, len(view), 1024 * 1024):
                writer.write(bytes(view[start : start + 1024 * 1024]))
        finally:
            view.release()
    except BaseException:
        writer.discard()
        raise
    return writer.finish(name="dimse.dcm")


def store_instance(
    *, peer: Peer, dataset: BytesIO, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str
) -> tuple[DicomFile | None, int, str]:
    """Store one C-STORE's dataset as ``peer``'s account: ``(file, status, error comment)``.

    Exactly one ``upload`` audit row (the ingest service's, with the AE titles as its reason):
    success with the stored file, or the refusal. On any failure nothing is left: no staged file,
    no stored object, no file row. The dataset's own SOP Instance and Class UIDs must be the
    request's (else 0xA900).
    """
    actor = peer.actor()

    def describe(error: BaseException) -> tuple[int | None, str]:
        # The row's status code stays the project's (HTTP-like) one; the DIMSE status is in the reason.
        code = describe_failure(error)[0] if isinstance(error, DicomServiceError) else 500
        status, comment = store_status(error)
        return code, f"{peer.audit_reason}: 0x{status:04X} {comment}"

    if not peer.may_store:
        error = StoreNotAllowedError("this AE may not store")
        refused(actor=actor, action=AuditLog.Action.UPLOAD, error=error, describe=describe)
        return (None, *store_status(error))

    def check(header: pydicom.Dataset) -> None:
        # The UIDs are keys of C-FIND, C-MOVE, C-GET and DICOMweb URLs: digits and dots, or refused.
        # (The SOP class and instance are required; a study or series UID is checked when present,
        # as the REST upload takes files without them.)
        for keyword in UID_KEYS:
            value = str(header.get(keyword, "")).strip()
            if (value or keyword in REQUIRED_UID_KEYS) and not is_uid(value):
                raise InvalidDicomError(f"{keyword} is missing or not a valid UID")
        if str(header.get("SOPInstanceUID", "")).strip() != sop_instance_uid.strip():
            raise SopInstanceMismatchError("SOP Instance UID differs from the C-STORE request's")
        if str(header.get("SOPClassUID", "")).strip() != sop_class_uid.strip():
            raise SopInstanceMismatchError("SOP Class UID differs from the C-STORE request's")

    upload = None
    try:
        with operation(actor=actor, action=AuditLog.Action.UPLOAD, describe=describe) as op:
            op.reason = peer.audit_reason
            upload = stage_dataset(
                dataset=dataset,
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid,
            )
            request = IngestRequest(
                staged_path=upload.path,
                sha256=None if peer.deidentify else upload.sha256,
                anonymize=peer.deidentify,
                study_type="general",
                options=deid_options() if peer.deidentify else DeidOptions(),
                called_ae=peer.called_ae,
            )
            dicom_file = ingest_checked_file(request=request, actor=actor, check=check)
    except Exception as error:  # every failure is a status to the peer, already audited
        if not isinstance(error, DicomServiceError):
            logger.exception("C-STORE from %s failed", peer.calling_ae)
        return (None, *store_status(error))
    finally:
        if upload is not None:
            upload.close()
    return dicom_file, SUCCESS, ""
