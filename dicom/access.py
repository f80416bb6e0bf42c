"""The one access rule: which files a user sees, whose patient data, and who may queue de-identification.

Every way in (the API, the admin, the preview view, and the protocols to come) asks here; none decides
on its own.

- A non-staff user sees their own uploads and the files derived from them, in full.
- Staff see every file. An original's patient data (every identifying key of the metadata, see
  :data:`PATIENT_DATA_KEYS`; its image; its bytes) needs the ``dicom.view_phi`` permission: without it
  the metadata is masked, the preview withheld and the download refused (403).
- Queueing the de-identification of a file the user does not own needs ``dicom.operate``.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q, QuerySet

from dicom.models import DicomFile

VIEW_PHI = "dicom.view_phi"
OPERATE = "dicom.operate"
MASK = "•••"
# Keys of the metadata object whose values identify a patient or their care: masked together.
PATIENT_DATA_KEYS = frozenset(
    {
        "patient_id",
        "patient_name",
        "patient_birth_date",
        "patient_sex",
        "patient_age",
        "accession_number",
        "study_date",
        "study_time",
        "study_description",
        "series_description",
        "institution_name",
    }
)


def visible_files(user: AbstractBaseUser) -> QuerySet[DicomFile]:
    """Files ``user`` may see: staff see all; others their uploads and the files derived from them."""
    files = DicomFile.objects.all()
    if getattr(user, "is_staff", False):
        return files
    # The same rule as owner=user OR source.owner=user OR source.source.owner=user, written with
    # subqueries: PostgreSQL computes the user's files once (owner index) instead of joining every
    # row to its source twice, which made every search of a non-staff user read the whole table.
    own = DicomFile.objects.filter(owner=user).values("pk")
    derived = DicomFile.objects.filter(source__isnull=False, source__owner=user).values("pk")
    return files.filter(Q(owner=user) | Q(source__in=own) | Q(source__in=derived))


def visible_file(user: AbstractBaseUser, pk) -> DicomFile | None:
    """The file ``pk`` if ``user`` may see it, else None: :func:`visible_files` for one row.

    The same rule, asked cheaply where it is plain: the file is read by its primary key, and staff
    (who see every file) or its owner (the rule's first clause) have it at once. Anyone else gets
    the answer of :func:`visible_files` itself, so no second copy of the rule exists here. One
    primary-key read costs a third of the rule's query with its two subqueries. An anonymous user
    sees nothing.
    """
    if not getattr(user, "is_authenticated", False):
        return None
    try:
        dicom_file = DicomFile.objects.get(pk=pk)
    except DicomFile.DoesNotExist:
        return None
    if getattr(user, "is_staff", False) or (
        dicom_file.owner_id is not None and dicom_file.owner_id == getattr(user, "pk", None)
    ):
        return dicom_file
    try:
        return visible_files(user).get(pk=pk)
    except DicomFile.DoesNotExist:
        return None


def may_see_patient_data(user: AbstractBaseUser, dicom_file: DicomFile) -> bool:
    """Whether ``user`` (who can see the file) may see its patient data, image and bytes."""
    if dicom_file.anonymized or not getattr(user, "is_staff", False):
        return True
    return user.has_perm(VIEW_PHI)


def masked_metadata(user: AbstractBaseUser, dicom_file: DicomFile, metadata: dict) -> dict:
    """``metadata`` as ``user`` may see it: patient data keys masked where they may not."""
    if may_see_patient_data(user, dicom_file):
        return metadata
    return {
        key: (MASK if key in PATIENT_DATA_KEYS and value not in (None, "") else value)
        for key, value in metadata.items()
    }


def may_queue_deidentification(user: AbstractBaseUser, dicom_file: DicomFile) -> bool:
    """Whether ``user`` may queue de-identification of ``dicom_file`` (their own, or as an operator)."""
    if dicom_file.owner_id is not None and dicom_file.owner_id == getattr(user, "pk", None):
        return True
    if dicom_file.source_id is not None and dicom_file.source.owner_id == getattr(user, "pk", None):
        return True
    return user.has_perm(OPERATE)
