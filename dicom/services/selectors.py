"""Reading files with the access rules applied: the API, the admin and the preview view use these."""

import uuid

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet

from dicom import access
from dicom.models import DicomFile
from dicom.services.errors import FileNotFoundInServiceError


def visible_files(*, user: AbstractBaseUser) -> QuerySet[DicomFile]:
    """Files ``user`` may see (the rule is :func:`dicom.access.visible_files`)."""
    return access.visible_files(user)


def parse_file_id(raw: str) -> uuid.UUID:
    """Turn a client's ``file_id`` into a UUID; anything that is not one is simply not found."""
    try:
        return uuid.UUID(str(raw))
    except (TypeError, ValueError):
        raise FileNotFoundInServiceError("file not found") from None


def get_visible_file(*, user: AbstractBaseUser, file_id: str | uuid.UUID) -> DicomFile:
    """Return the file or raise ``FileNotFoundInServiceError``, the same for missing and forbidden."""
    parsed = file_id if isinstance(file_id, uuid.UUID) else parse_file_id(file_id)
    dicom_file = access.visible_file(user, parsed)
    if dicom_file is None:
        raise FileNotFoundInServiceError("file not found")
    return dicom_file
