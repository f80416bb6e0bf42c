"""STOW-RS (being written): store instances from a ``multipart/related`` body."""

from dicom.services.errors import DicomServiceError


class NotYetServed(DicomServiceError):
    status_code = 501


def store(view, request, *, study):
    raise NotYetServed("STOW-RS is not served yet")
