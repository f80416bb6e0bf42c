"""Web-layer helpers shared by the API and the staff views (they use django.http, so not services)."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from asgiref.sync import sync_to_async
from django.http import FileResponse, Http404, HttpRequest

from audit.services import Actor, Operation, operation
from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.errors import FileNotFoundInServiceError


def client_address(request: HttpRequest) -> str | None:
    """The peer's address as the WSGI server saw it (set a proxy's real-IP handling upstream)."""
    return request.META.get("REMOTE_ADDR") or None


class StoredFileResponse(FileResponse):
    """A file streamed a block at a time, by the ASGI handler too.

    Django's ASGI handler, given a response over a synchronous iterator (a file), lists it whole
    in memory before sending (``StreamingHttpResponse.__aiter__``): a 1 GB download would take
    1 GB of the web worker. Here each block is read in the request's thread and sent before the
    next is read. Under WSGI (the test client) the file is iterated as usual.
    """

    block_size = 1024 * 1024

    async def __aiter__(self):
        blocks = iter(self.streaming_content)
        end = object()
        # Not thread-sensitive: any thread may read a file; downloads do not queue behind each other.
        read_next = sync_to_async(next, thread_sensitive=False)
        while (block := await read_next(blocks, end)) is not end:
            yield block


def stored_file_response(dicom_file: DicomFile) -> FileResponse:
    """Stream a stored file as ``application/dicom``, named after its id (never a client's filename)."""
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
