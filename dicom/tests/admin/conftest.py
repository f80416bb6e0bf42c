"""Fixtures of the admin tests: staff with and without the patient data permission, stored files."""

import shutil

import pytest
from django.contrib.auth.models import Permission
from pydicom.data import get_testdata_file

from audit.services import Actor
from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.anonymization import request_anonymization, run_anonymization
from dicom.services.deid import DeidOptions
from dicom.services.ingest import IngestRequest, ingest_file
from dicom.tests.services.dicom_builders import TEXT_CASES, build_text_case

VIEWER_PERMISSIONS = ("dicom.view_dicomfile", "audit.view_auditlog")
OPERATOR_PERMISSIONS = (*VIEWER_PERMISSIONS, "dicom.change_dicomfile")
PASSWORD = "staff-password-123"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The default hasher takes a good part of a second per user; these tests create and log in many.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def grant(user, *names: str):
    for name in names:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return type(user).objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance


@pytest.fixture
def phi_staff(django_user_model):
    """Staff who may see patient data and anonymize: a privacy officer or a clinician."""
    user = django_user_model.objects.create_user(username="officer", password=PASSWORD, is_staff=True)
    return grant(user, *OPERATOR_PERMISSIONS, "dicom.view_phi")


@pytest.fixture
def plain_staff(django_user_model):
    """Staff who may browse and anonymize but not see patient data."""
    user = django_user_model.objects.create_user(username="clerk", password=PASSWORD, is_staff=True)
    return grant(user, *OPERATOR_PERMISSIONS)


def store_test_file(name: str, *, owner, anonymize: bool = False, study_type: str = "general"):
    """Ingest one of pydicom's test files through the service, as an upload would."""
    staged = storage.new_staging_path()
    shutil.copyfile(get_testdata_file(name), staged)
    return ingest_file(
        request=IngestRequest(
            staged_path=staged, sha256=None, anonymize=anonymize, study_type=study_type, options=DeidOptions()
        ),
        actor=Actor(user=owner),
    )


def store_text_case(
    name: str, *, owner, anonymize: bool = False, options: DeidOptions | None = None
) -> DicomFile:
    """Ingest one file of the burned-in text test set (``dicom_builders.TEXT_CASES``), as an upload would."""
    staged = storage.new_staging_path()
    build_text_case(next(case for case in TEXT_CASES if case.name == name), staged)
    return ingest_file(
        request=IngestRequest(
            staged_path=staged,
            sha256=None,
            anonymize=anonymize,
            study_type="general",
            options=options or DeidOptions(),
        ),
        actor=Actor(user=owner),
    )


def refused_job(source: DicomFile, *, requested_by) -> DicomFile:
    """Run the real job that de-identifies ``source`` without Clean Pixel Data; return its failed row."""
    derived = request_anonymization(actor=Actor(user=requested_by), source=source, options=DeidOptions())
    assert run_anonymization(file_id=derived.id) == DicomFile.Status.FAILED
    derived.refresh_from_db()
    return derived
