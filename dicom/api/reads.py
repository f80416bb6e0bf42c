"""The API's three reads of one file (metadata, status, download): what each answers, or raises.

Shared by the DRF views (``dicom.api.views``) and the direct path the web server takes for plain
token-authenticated GETs (``dicom.api.direct``), so both answer the same from the same checks. Each
raises the project's errors (``dicom.services.errors``), which both map to ``{"detail": ...}``.
"""

from __future__ import annotations

import uuid

from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpResponse

from dicom import access
from dicom.models import DicomFile
from dicom.responses import stored_file_response
from dicom.services.errors import AccessRefusedError, FileNotReadyError
from dicom.services.ingest import file_metadata
from dicom.services.selectors import get_visible_file


def metadata(*, user: AbstractBaseUser, file_id: str | uuid.UUID) -> dict:
    """The metadata object of a completed file, patient data masked where ``user`` may not see it."""
    dicom_file = get_visible_file(user=user, file_id=file_id)
    if dicom_file.status != DicomFile.Status.COMPLETED:
        raise FileNotReadyError(f"file is {dicom_file.status}: its metadata is not available yet")
    return access.masked_metadata(user, dicom_file, file_metadata(dicom_file))


def status(*, user: AbstractBaseUser, file_id: str | uuid.UUID) -> dict:
    """The file's processing status (and why it failed, and what it was derived from)."""
    dicom_file = get_visible_file(user=user, file_id=file_id)
    body = {"status": dicom_file.status, "file_id": str(dicom_file.id)}
    if dicom_file.status == DicomFile.Status.FAILED:
        body["detail"] = dicom_file.failure_detail or "processing failed"
    if dicom_file.source_id is not None:
        body["source_file_id"] = str(dicom_file.source_id)
    return body


def download(*, user: AbstractBaseUser, file_id: str | uuid.UUID) -> HttpResponse:
    """The stored file as a streamed response; an original needs the patient data permission."""
    dicom_file = get_visible_file(user=user, file_id=file_id)
    if not access.may_see_patient_data(user, dicom_file):
        raise AccessRefusedError(
            "this file is an original with patient data: downloading it needs the patient data "
            "permission (dicom.view_phi)"
        )
    if not dicom_file.is_ready:
        reason = dicom_file.failure_detail if dicom_file.status == DicomFile.Status.FAILED else ""
        raise FileNotReadyError(
            f"file is {dicom_file.status}: nothing to download" + (f" ({reason})" if reason else "")
        )
    return stored_file_response(dicom_file)
