"""The API's upload, after its fields were read: shared by the DRF view (``dicom.api.views``) and the
direct path the web server takes for raw uploads (``dicom.api.direct``)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser

from audit.services import Actor
from dicom import access
from dicom.services.errors import InvalidDicomError
from dicom.services.ingest import IngestRequest, file_metadata, ingest_file
from dicom.uploads import StagedUpload, too_large_error

# What a request may declare beyond the file's own limit (a form's envelope; a raw body has none).
DECLARED_MARGIN = 64 * 1024


def refuse_declared_length(declared: int) -> None:
    """A body declared larger than any upload may be is a 413 before anything is read of it."""
    if declared > settings.DICOM_MAX_UPLOAD_SIZE + DECLARED_MARGIN:
        raise too_large_error()


def store_upload(*, user: AbstractBaseUser, actor: Actor, upload: object, fields: dict) -> dict:
    """Ingest the staged ``upload`` with its validated ``fields``; the API's answer to the upload."""
    if not isinstance(upload, StagedUpload):
        raise InvalidDicomError("the upload was not received as a file")
    dicom_file = ingest_file(
        request=IngestRequest.of_upload(staged_path=upload.path, sha256=upload.sha256, fields=fields),
        actor=actor,
    )
    return {
        "message": "DICOM file processed successfully",
        "file_id": str(dicom_file.id),
        "metadata": access.masked_metadata(user, dicom_file, file_metadata(dicom_file)),
        "status": dicom_file.status,
    }
