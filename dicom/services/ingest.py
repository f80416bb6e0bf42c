"""Taking a received file into the service: validate once, de-identify if asked, store, record.

An upload reads its bytes once on the way in (hashed and preamble-zeroed by the upload handler),
once in the validating walk that also yields the metadata, and is renamed into storage. Its rows
(the file and the audit entry) commit in one transaction; if that fails the stored file is removed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from django.conf import settings
from django.db import transaction

from audit.models import AuditLog
from audit.services import Actor, Operation, operation
from dicom.models import DicomFile
from dicom.services import events, storage
from dicom.services.deid import DeidOptions, deidentify_file
from dicom.services.keys import deid_key
from dicom.services.metadata import HEADER_TAGS, INDEX_ONLY, extract_metadata
from dicom.services.search import index_columns
from dicom.services.validation import validate_dicom_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestRequest:
    """What a client asked for, already validated at the edge (API form, command flags)."""

    staged_path: Path
    sha256: str | None
    anonymize: bool
    study_type: str
    options: DeidOptions
    # The AE title of ours a C-STORE was received on (the forwarding rules' trigger); "" otherwise.
    called_ae: str = ""

    @classmethod
    def of_upload(cls, *, staged_path: Path, sha256: str | None, fields: Mapping[str, Any]) -> IngestRequest:
        """A staged upload with the fields its entry point validated (``anonymize``, ``study_type``,
        ``options``: the REST upload's and STOW-RS's, from the same serializer)."""
        return cls(
            staged_path=staged_path,
            sha256=sha256,
            anonymize=fields["anonymize"],
            study_type=fields["study_type"],
            options=fields["options"],
        )


def file_metadata(dicom_file: DicomFile) -> dict:
    """The metadata object of the API: the header values plus the service's own fields."""
    return {
        **dicom_file.metadata,
        "file_id": str(dicom_file.id),
        "study_type": dicom_file.study_type,
        "anonymized": dicom_file.anonymized,
        "size": dicom_file.size,
    }


def validate_staged(path: Path):
    return validate_dicom_file(
        path,
        wanted_tags=HEADER_TAGS,
        max_inflated_size=settings.DICOM_MAX_INFLATED_SIZE,
        max_depth=settings.DICOM_MAX_SEQUENCE_DEPTH,
    )


def ingest_file(*, request: IngestRequest, actor: Actor) -> DicomFile:
    """Validate, optionally de-identify, store and record one staged file; return its row.

    The staged file is consumed (moved into storage, or deleted when it held an original that was
    de-identified). Raises ``DicomServiceError`` subclasses for bad input; nothing is stored or
    committed then. With ``anonymize`` the original never reaches storage or the database.
    Audited as one ``upload`` operation: the success row commits with the file's row; a refusal
    is audited after everything was undone.
    """
    with operation(actor=actor, action=AuditLog.Action.UPLOAD) as op:
        return _ingest(request=request, actor=actor, op=op)


def ingest_checked_file(
    *, request: IngestRequest, actor: Actor, check: Callable[[pydicom.Dataset], None]
) -> DicomFile:
    """As :func:`ingest_file`, with ``check`` called on the validated header of the file as received
    (before any de-identification), before anything is stored.

    A ``DicomServiceError`` ``check`` raises refuses the file exactly as a validation error does:
    the staged file removed, nothing stored, the refusal audited. (STOW-RS refuses an instance of
    another study than the request's path this way.)
    """
    with operation(actor=actor, action=AuditLog.Action.UPLOAD) as op:
        return _ingest(request=request, actor=actor, op=op, check=check)


def _ingest(
    *,
    request: IngestRequest,
    actor: Actor,
    op: Operation,
    check: Callable[[pydicom.Dataset], None] | None = None,
) -> DicomFile:
    staged = Path(request.staged_path)
    produced: Path | None = None
    stored_key = ""
    try:
        validated = validate_staged(staged)
        if check is not None:
            check(validated.header)
        dicom_file = DicomFile(
            owner=actor.user if actor.user is not None and actor.user.is_authenticated else None,
            study_type=request.study_type,
            status=DicomFile.Status.COMPLETED,
            transfer_syntax_uid=validated.transfer_syntax_uid,
        )
        if request.anonymize:
            produced = storage.new_staging_path()
            dataset, report = deidentify_file(staged, produced, options=request.options, key=deid_key())
            # The original (patient data) goes now, before anything is stored.
            staged.unlink(missing_ok=True)
            header = dataset
            dicom_file.anonymized = True
            dicom_file.deid_options = request.options.to_names()
            dicom_file.deid_report = report.to_dict()
            source_path, digest = produced, None
        else:
            header = validated.header
            source_path, digest = staged, request.sha256
        apply_header(dicom_file, extract_metadata(header))
        stored = storage.store_staged_file(
            staged_path=source_path, key=storage.key_for(dicom_file.id), sha256=digest
        )
        stored_key = stored.key
        dicom_file.storage_key, dicom_file.size, dicom_file.sha256 = stored.key, stored.size, stored.sha256
        with transaction.atomic():
            dicom_file.save(force_insert=True)
            op.succeed(file_id=dicom_file.id)
            events.files_stored([dicom_file], called_ae=request.called_ae)
    except BaseException:
        if stored_key:
            storage.delete(stored_key)
        raise
    finally:
        for leftover in (staged, produced):
            if leftover is not None and leftover.exists():
                os.unlink(leftover)
    logger.info("stored file %s (%s bytes, anonymized=%s)", dicom_file.id, dicom_file.size, request.anonymize)
    return dicom_file


def apply_header(dicom_file: DicomFile, metadata: dict) -> None:
    """Set the row's metadata object and its indexed columns (the search index) from a header's values."""
    metadata = dict(metadata)
    index_only = metadata.pop(INDEX_ONLY, None) or {}
    dicom_file.metadata = metadata
    for name, value in index_columns(metadata, index_only).items():
        setattr(dicom_file, name, value)
    dicom_file.modality = (metadata.get("modality") or "")[:16]
    dicom_file.study_instance_uid = metadata.get("study_instance_uid") or ""
    dicom_file.series_instance_uid = metadata.get("series_instance_uid") or ""
    dicom_file.sop_instance_uid = metadata.get("sop_instance_uid") or ""
    dicom_file.patient_id = (metadata.get("patient_id") or "")[:64]
