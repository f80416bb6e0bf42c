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


class HashingUploadHandler(FileUploadHandler):
    """Writes each file field to a staging file, zeroing the preamble and hashing as it goes."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > settings.DICOM_MAX_UPLOAD_SIZE + 64 * 1024:
            raise too_large_error()

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.path = new_staging_path()
        self.handle = open(self.path, "wb")  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if start < PREAMBLE_SIZE:
            keep = min(PREAMBLE_SIZE - start, len(raw_data))
            raw_data = bytes(keep) + raw_data[keep:]
        self.received += len(raw_data)
        if self.received > settings.DICOM_MAX_UPLOAD_SIZE:
            self.upload_interrupted()
            raise too_large_error()
        self.handle.write(raw_data)
        self.digest.update(raw_data)
        return None

    def file_complete(self, file_size: int) -> StagedUpload:
        self.handle.close()
        return StagedUpload(
            path=self.path,
            name=self.file_name or "upload.dcm",
            content_type=self.content_type,
            size=file_size,
            sha256=self.digest.hexdigest(),
            charset=self.charset,
        )

    def upload_interrupted(self) -> None:
        handle = getattr(self, "handle", None)
        if handle is not None and not handle.closed:
            handle.close()
        path = getattr(self, "path", None)
        if path is not None:
            path.unlink(missing_ok=True)
