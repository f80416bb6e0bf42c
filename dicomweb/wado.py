"""WADO-RS (being written): retrieve instances, metadata, frames, bulk data, rendered images."""

from dicom.services.errors import DicomServiceError


class NotYetServed(DicomServiceError):
    status_code = 501


def _not_yet(*args, **kwargs):
    raise NotYetServed("WADO-RS is not served yet")


retrieve = metadata = rendered = frames = bulkdata = _not_yet
