"""Web-layer helpers shared by the API and the staff views (they use django.http, so not services)."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse

from audit.services import Actor, Operation, operation
from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.errors import FileNotFoundInServiceError


def client_address(request: HttpRequest) -> str | None:
    """The peer's address as the WSGI server saw it (set a proxy's real-IP handling upstream)."""
    return request.META.get("REMOTE_ADDR") or None


class StoredFileResponse(FileResponse):
    """A stored file streamed a block at a time: the web server (``dicomsite.server``) reads each
    block in a pool thread and sends it before reading the next, so a 1 GB download holds one
    block of the web worker's memory."""

    block_size = 1024 * 1024


def stored_file_response(dicom_file: DicomFile) -> HttpResponse:
    """Stream a stored file as ``application/dicom``, named after its id (never a client's filename).

    With ``DICOM_DOWNLOAD_ACCEL_PREFIX`` (a front end such as nginx in front of local storage) the
    answer carries no body but ``X-Accel-Redirect: <prefix><key>``, and the front end sends the
    file from its internal location: the checks and the audit row stay here, the copying goes.
    """
    prefix = settings.DICOM_DOWNLOAD_ACCEL_PREFIX
    if prefix and storage.local_path(dicom_file.storage_key) is not None:
        response = HttpResponse(content_type="application/dicom")
        response["X-Accel-Redirect"] = prefix + dicom_file.storage_key
        response["Content-Disposition"] = f'attachment; filename="{dicom_file.id}.dcm"'
        return response
    response = StoredFileResponse(
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


@contextmanager
def staff_operation(request: HttpRequest, *, action: str, file_id: object = None) -> Iterator[Operation]:
    """One audited operation of a staff view (admin, previews), by the logged-in user.

    A file the user may not see (``FileNotFoundInServiceError`` inside) is audited as a refusal
    and answered with Django's 404, the same for missing and forbidden.
    """
    actor = Actor(user=request.user, client_address=client_address(request))
    try:
        with operation(actor=actor, action=action, file_id=uuid_or_none(str(file_id or ""))) as op:
            yield op
    except FileNotFoundInServiceError as error:
        raise Http404(error.detail) from None
