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


def get_visible_files(*, user: AbstractBaseUser, file_ids: list[uuid.UUID]) -> list[DicomFile]:
    """The files ``file_ids``, in that order, by the rule for many files (one query).

    Raises ``FileNotFoundInServiceError`` naming the first that does not exist or that ``user`` may
    not see (the same for both; the id is the client's own).
    """
    found = {row.pk: row for row in visible_files(user=user).filter(pk__in=file_ids).select_related("source")}
    for file_id in file_ids:
        if file_id not in found:
            raise FileNotFoundInServiceError(f"file not found: {file_id}")
    return [found[file_id] for file_id in file_ids]
