"""Our C-STORE SCU (pynetdicom): one stored file to one remote AE, with bounded timeouts.

The association is requested with ``DICOM_SCU_AE_TITLE`` as calling AE title and one presentation
context: the file's SOP class with its own transfer syntax, plus Explicit and Implicit VR Little
Endian when that syntax is uncompressed (pynetdicom converts between uncompressed encodings). The
bytes sent are the stored file's, decoded only as far as pydicom needs to re-encode the dataset.
Every outcome other than success (0x0000) or a storage warning (0xB000, 0xB006, 0xB007) is a
:class:`SendError` whose ``detail`` names the status or what failed, never a value of the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from django.conf import settings
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicom.services.errors import DicomServiceError
from dimse import scp

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


class SendError(DicomServiceError):
    """A send that did not succeed (peer unreachable, rejected, aborted, a failure status, a timeout)."""

    status_code = 502


@dataclass(frozen=True)
class StoreTarget:
    """The remote AE: its AE title (the called AE) and where it listens."""

    ae_title: str
    host: str
    port: int


def proposed_syntaxes(transfer_syntax: str) -> list[str]:
    """The file's transfer syntax, plus Explicit and Implicit VR Little Endian for an uncompressed one."""
    syntax = UID(transfer_syntax or ImplicitVRLittleEndian)
    if syntax not in UNCOMPRESSED:
        return [syntax]
    return [syntax, *(other for other in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if other != syntax)]


def send_c_store(*, source: BinaryIO, target: StoreTarget) -> int:
    """C-STORE the Part 10 file read from ``source`` to ``target``; return the status (success or a warning).

    Raises ``SendError`` for a file pydicom cannot read, a connection refused or timed out, an
    association rejected or aborted, no response within ``DICOM_SCU_DIMSE_TIMEOUT_SECONDS``, or a
    failure status (its value in the detail).
    """
    try:
        dataset = pydicom.dcmread(source)
        sop_class = UID(str(dataset.SOPClassUID))
        syntax = str(dataset.file_meta.TransferSyntaxUID)
    except Exception:
        # pydicom's message may quote a value: only that it failed.
        raise SendError("the stored file cannot be read as DICOM") from None
    ae = AE(ae_title=settings.DICOM_SCU_AE_TITLE)
    ae.connection_timeout = settings.DICOM_SCU_CONNECT_TIMEOUT_SECONDS
    ae.acse_timeout = settings.DICOM_SCU_ACSE_TIMEOUT_SECONDS
    ae.dimse_timeout = settings.DICOM_SCU_DIMSE_TIMEOUT_SECONDS
    ae.network_timeout = settings.DICOM_SCU_DIMSE_TIMEOUT_SECONDS
    ae.add_requested_context(sop_class, proposed_syntaxes(syntax))
    where = f"{target.ae_title} at {target.host}:{target.port}"
    assoc = ae.associate(
        target.host, target.port, ae_title=target.ae_title, evt_handlers=scp.REQUESTOR_HANDLERS
    )
    try:
        if assoc.is_rejected:
            raise SendError(f"association with {where} rejected")
        if not assoc.is_established:
            raise SendError(f"no association with {where} (refused, aborted or timed out)")
        try:
            answer = assoc.send_c_store(dataset)
        except ValueError:
            # No accepted presentation context for the file's SOP class and transfer syntax.
            raise SendError(
                f"{where} accepted no presentation context for this SOP class and syntax"
            ) from None
        status = answer.get("Status") if answer is not None else None
        if status is None:
            raise SendError(f"no C-STORE response from {where} (timed out or aborted)")
        status = int(status)
        if status != SUCCESS and status not in WARNINGS:
            raise SendError(f"C-STORE to {where} failed with status 0x{status:04X}")
        return status
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
