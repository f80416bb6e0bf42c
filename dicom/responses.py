"""Web-layer helpers shared by the API and the staff views (they use django.http, so not services)."""

import uuid

from django.http import FileResponse, Http404, HttpRequest

from audit.services import Actor, record
from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.errors import FileNotFoundInServiceError
from dicom.services.selectors import get_visible_file


def client_address(request: HttpRequest) -> str | None:
    """The peer's address as the WSGI server saw it (set a proxy's real-IP handling upstream)."""
    return request.META.get("REMOTE_ADDR") or None


def stored_file_response(dicom_file: DicomFile) -> FileResponse:
    """Stream a stored file as ``application/dicom``, named after its id (never a client's filename)."""
    response = FileResponse(
        storage.open_stored(dicom_file.storage_key),
        as_attachment=True,
        filename=f"{dicom_file.id}.dcm",
        content_type="application/dicom",
    )
    if dicom_file.size is not None:
        response["Content-Length"] = str(dicom_file.size)
    return response


def uuid_or_none(raw: str | None) -> uuid.UUID | None:
    """The id a client sent, for the audit row, if it is a UUID at all."""
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        return None


def visible_file_or_404(request: HttpRequest, file_id: str, *, actor: Actor, action: str) -> DicomFile:
    """The file the staff views act on, or an audited refusal and Django's 404 (missing or not theirs)."""
    try:
        return get_visible_file(user=request.user, file_id=file_id)
    except FileNotFoundInServiceError as error:
        record(
            actor=actor,
            action=action,
            success=False,
            file_id=uuid_or_none(file_id),
            status_code=404,
            reason=error.detail,
        )
        raise Http404(error.detail) from None
