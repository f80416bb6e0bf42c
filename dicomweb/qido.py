"""QIDO-RS (being written): search for studies, series and instances."""

from dicom.services.errors import DicomServiceError

STUDY, SERIES, INSTANCE = "study", "series", "instance"


class NotYetServed(DicomServiceError):
    status_code = 501


def search(view, request, *, level, study=None, series=None):
    raise NotYetServed("QIDO-RS is not served yet")
