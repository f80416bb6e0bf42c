"""Web-layer helpers shared by the API and the staff views (they use django.http, so not services)."""

from django.http import FileResponse, HttpRequest

from dicom.models import DicomFile
from dicom.services import storage


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
