"""The one error type of the DICOM domain.

Services raise :class:`DicomServiceError` (or a subclass) with a ``detail`` that is safe to show a
client: it never carries patient data, only what is wrong (tag and keyword at most). The API maps
``status_code`` and ``detail`` onto the seed's ``{"detail": "..."}`` shape.
"""


class DicomServiceError(Exception):
    """A failure a client or operator can act on; ``detail`` is safe to show and to log."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidDicomError(DicomServiceError):
    """The bytes are not a complete, well-formed DICOM file."""


class DeflateBombError(InvalidDicomError):
    """A deflated dataset would inflate beyond the configured bound: rejected as malformed input."""


class FileTooLargeError(DicomServiceError):
    """The upload exceeds the configured size limit."""

    status_code = 413


class FileNotFoundInServiceError(DicomServiceError):
    """No file with this id, or none the caller may see (the two are indistinguishable on purpose)."""

    status_code = 404


class FileNotReadyError(DicomServiceError):
    """The file exists but has no stored content yet (still processing) or its job failed."""

    status_code = 409


class DeidentificationRefusedError(DicomServiceError):
    """The engine will not de-identify this input as asked (e.g. burned-in annotation)."""


class DeidentificationVerificationError(DicomServiceError):
    """The verification pass found something identifying left in the output; nothing is released."""

    status_code = 422


class AccessRefusedError(DicomServiceError):
    """The user can see the file but may not do this with it (its patient data, or another's file)."""

    status_code = 403
