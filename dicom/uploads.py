"""Receiving uploads: stream to a staging file, zero the preamble and hash on the way in.

Every uploaded file goes to a staging file beside local storage (same filesystem, so storing it
later is a rename, not a copy). The first 128 bytes, the DICOM preamble, are written as zeros as
they arrive: a preamble can carry an executable, and the stored file is exactly what was hashed.
Nothing large is ever held in memory, and a body over the configured limit stops the upload.
"""

import hashlib
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from dicom.services.errors import FileTooLargeError
from dicom.services.storage import new_staging_path

PREAMBLE_SIZE = 128


def too_large_error() -> FileTooLargeError:
    limit = settings.DICOM_MAX_UPLOAD_SIZE
    return FileTooLargeError(f"upload exceeds the limit of {limit} bytes")


class StagedUpload(UploadedFile):
    """An uploaded file sitting in the staging directory, with the SHA-256 of its (zeroed) bytes."""

    def __init__(self, *, path: Path, name: str, content_type: str, size: int, sha256: str, charset):
        super().__init__(open(path, "rb"), name, content_type, size, charset)  # noqa: SIM115
        self.path = path
        self.sha256 = sha256

    def temporary_file_path(self) -> str:
        return str(self.path)

    def close(self) -> None:
        # The service may have renamed the file into storage already; otherwise it must not outlive
        # the request (an original that is being de-identified holds patient data).
        try:
            super().close()
        finally:
            self.path.unlink(missing_ok=True)


class StagingWriter:
    """A file being received into staging: preamble zeroed, hashed and bounded as it is written.

    The one receiver of uploaded bytes: the multipart handler below, the web server's raw
    ``application/dicom`` bodies (``dicomsite.server``) and the API's own reading of them under
    WSGI all write through it. ``finish`` gives the staged file; ``discard`` removes it.
    """

    def __init__(self) -> None:
        self.path = new_staging_path()
        self._handle = open(self.path, "wb")  # noqa: SIM115  (closed by finish or discard)
        self._digest = hashlib.sha256()
        self.received = 0

    def write(self, data: bytes) -> None:
        if self.received < PREAMBLE_SIZE:
            keep = min(PREAMBLE_SIZE - self.received, len(data))
            data = bytes(keep) + data[keep:]
        self.received += len(data)
        if self.received > settings.DICOM_MAX_UPLOAD_SIZE:
            self.discard()
            raise too_large_error()
        self._handle.write(data)
        self._digest.update(data)

    def finish(self, *, name: str = "upload.dcm", content_type: str = "application/dicom", charset=None):
        self._handle.close()
        return StagedUpload(
            path=self.path,
            name=name,
            content_type=content_type,
            size=self.received,
            sha256=self._digest.hexdigest(),
            charset=charset,
        )

    def discard(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self.path.unlink(missing_ok=True)


def receive_stream(stream, receiver, *, chunk_size: int = 1024 * 1024):
    """Give a file-like ``stream`` to ``receiver`` (a ``StagingWriter``, or anything with its
    ``write``, ``finish`` and ``discard``) a chunk at a time; what ``finish`` returns. On any
    error the receiver discards what it staged."""
    try:
        while chunk := stream.read(chunk_size):
            receiver.write(chunk)
    except BaseException:
        receiver.discard()
        raise
    return receiver.finish()


def stage_stream(stream, *, chunk_size: int = 1024 * 1024) -> StagedUpload:
    """Copy a raw request body (a file-like object) to staging through a ``StagingWriter``."""
    return receive_stream(stream, StagingWriter(), chunk_size=chunk_size)


class HashingUploadHandler(FileUploadHandler):
    """Writes each file field to a staging file through a ``StagingWriter``."""

    writer: StagingWriter | None = None

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > settings.DICOM_MAX_UPLOAD_SIZE + 64 * 1024:
            raise too_large_error()

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.writer = StagingWriter()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.writer.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> StagedUpload:
        writer, self.writer = self.writer, None
        return writer.finish(
            name=self.file_name or "upload.dcm", content_type=self.content_type, charset=self.charset
        )

    def upload_interrupted(self) -> None:
        if self.writer is not None:
            self.writer.discard()
            self.writer = None
