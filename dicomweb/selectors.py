"""The instances a DICOMweb request may reach, by UID, through the one access rule.

An instance is a stored file (completed, with bytes) the user may see (``dicom.access``). The same
SOP Instance UID can be stored more than once (the REST upload keeps every upload; a de-identified
copy that kept its UIDs shares them with its original): DICOMweb names each instance once, by its
newest visible file.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Exists, OuterRef, QuerySet

from dicom import access
from dicom.models import DicomFile
from dicom.services.errors import FileNotFoundInServiceError


def stored_files(user: AbstractBaseUser) -> QuerySet[DicomFile]:
    """Files ``user`` may see that have bytes to serve (completed and stored)."""
    return (
        access.visible_files(user)
        .filter(status=DicomFile.Status.COMPLETED)
        .exclude(storage_key="")
        .exclude(sop_instance_uid="")
    )


def instances(
    user: AbstractBaseUser,
    *,
    study: str | None = None,
    series: str | None = None,
    instance: str | None = None,
) -> QuerySet[DicomFile]:
    """One file per SOP Instance UID (the newest) that ``user`` may see, under the UIDs given."""
    files = stored_files(user)
    if study is not None:
        files = files.filter(study_instance_uid=study)
    if series is not None:
        files = files.filter(series_instance_uid=series)
    if instance is not None:
        files = files.filter(sop_instance_uid=instance)
    newer = stored_files(user).filter(
        sop_instance_uid=OuterRef("sop_instance_uid"), created_at__gt=OuterRef("created_at")
    )
    return files.filter(~Exists(newer))


def instances_or_404(
    user: AbstractBaseUser,
    *,
    study: str | None = None,
    series: str | None = None,
    instance: str | None = None,
) -> list[DicomFile]:
    """As :func:`instances`, in study, series and instance order; none is a 404 (as missing as forbidden)."""
    found = list(
        instances(user, study=study, series=series, instance=instance).order_by(
            "study_instance_uid", "series_instance_uid", "sop_instance_uid"
        )
    )
    if not found:
        what = "instance" if instance is not None else "series" if series is not None else "study"
        raise FileNotFoundInServiceError(f"no such {what}")
    return found
