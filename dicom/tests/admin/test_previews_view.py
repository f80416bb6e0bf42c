"""The preview view: the API's access rules, the patient data rule, placeholders, audit."""

import io

import pytest
from PIL import Image

from audit.models import AuditLog
from dicom.services import storage
from dicom.tests.admin.conftest import PASSWORD, store_test_file

pytestmark = pytest.mark.django_db


def url(dicom_file, variant="thumb"):
    return f"/dicom/files/{dicom_file.id}/preview/{variant}.png"


def image(response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_phi_staff_gets_the_rendered_original_and_it_is_cached(client, phi_staff, user):
    dicom_file = store_test_file("CT_small.dcm", owner=user)
    login(client, phi_staff)
    response = client.get(url(dicom_file))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Preview-Kind"] == "image"
    assert image(response).size == (128, 128)
    assert storage.exists(storage.preview_key_for(dicom_file.id, variant="thumb"))
    # Showing an original's pixels is audited, even for a thumbnail.
    row = AuditLog.objects.get(action=AuditLog.Action.PREVIEW, file_id=dicom_file.id)
    assert row.success and row.username == "officer"


def test_staff_without_phi_permission_gets_the_withheld_placeholder_for_an_original(
    client, plain_staff, user
):
    dicom_file = store_test_file("CT_small.dcm", owner=user)
    login(client, plain_staff)
    response = client.get(url(dicom_file, "full"))
    assert response.status_code == 200
    assert response["X-Preview-Kind"] == "withheld"
    assert image(response).size == (512, 512)  # the placeholder, not the 128x128 image
    assert not storage.exists(storage.preview_key_for(dicom_file.id, variant="full"))
    row = AuditLog.objects.get(action=AuditLog.Action.PREVIEW, file_id=dicom_file.id)
    assert not row.success and "withheld" in row.reason


def test_staff_without_phi_permission_sees_a_deidentified_file(client, plain_staff, user):
    dicom_file = store_test_file("CT_small.dcm", owner=user, anonymize=True)
    login(client, plain_staff)
    response = client.get(url(dicom_file, "full"))
    assert response["X-Preview-Kind"] == "image"
    assert image(response).size == (128, 128)
    assert (
        AuditLog.objects.filter(action=AuditLog.Action.PREVIEW, file_id=dicom_file.id, success=True).count()
        == 1
    )


def test_thumbnails_of_deidentified_files_are_not_audited(client, plain_staff, user):
    dicom_file = store_test_file("CT_small.dcm", owner=user, anonymize=True)
    login(client, plain_staff)
    assert client.get(url(dicom_file))["X-Preview-Kind"] == "image"
    assert not AuditLog.objects.filter(action=AuditLog.Action.PREVIEW).exists()


def test_non_staff_user_cannot_preview_someone_elses_file(client, user, other_user):
    dicom_file = store_test_file("CT_small.dcm", owner=other_user, anonymize=True)
    login_ok = client.login(username="alice", password="alice-password-123")
    assert login_ok
    response = client.get(url(dicom_file))
    assert response.status_code == 404
    row = AuditLog.objects.get(action=AuditLog.Action.PREVIEW)
    assert not row.success and row.status_code == 404 and row.file_id == dicom_file.id


def test_owner_previews_their_own_deidentified_file(client, user):
    dicom_file = store_test_file("CT_small.dcm", owner=user, anonymize=True)
    assert client.login(username="alice", password="alice-password-123")
    assert client.get(url(dicom_file))["X-Preview-Kind"] == "image"


def test_anonymous_is_sent_to_the_login_page(client, user):
    dicom_file = store_test_file("CT_small.dcm", owner=user, anonymize=True)
    response = client.get(url(dicom_file))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("file_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_missing_or_malformed_id_is_404(client, phi_staff, file_id):
    login(client, phi_staff)
    assert client.get(f"/dicom/files/{file_id}/preview/thumb.png").status_code == 404


def test_unknown_variant_is_404(client, phi_staff, user):
    dicom_file = store_test_file("CT_small.dcm", owner=user)
    login(client, phi_staff)
    assert client.get(url(dicom_file, "huge")).status_code == 404


def test_a_file_without_pixel_data_gets_a_placeholder(client, phi_staff, user):
    dicom_file = store_test_file("rtplan.dcm", owner=user)
    login(client, phi_staff)
    response = client.get(url(dicom_file, "full"))
    assert response.status_code == 200
    assert response["X-Preview-Kind"] == "no-image"
    assert image(response).size == (512, 512)


def test_an_undecodable_file_shows_why_and_its_page_still_works(client, phi_staff):
    from pathlib import Path

    from pydicom.data import get_testdata_file

    from dicom.models import DicomFile
    from dicom.tests.factories import DicomFileFactory

    # Stored bytes whose pixel data is cut short (as after storage corruption: upload would refuse it).
    dicom_file = DicomFileFactory(anonymized=True)
    key = storage.key_for(dicom_file.id)
    storage.store_bytes(data=Path(get_testdata_file("MR_truncated.dcm")).read_bytes(), key=key)
    DicomFile.objects.filter(pk=dicom_file.pk).update(storage_key=key)
    login(client, phi_staff)
    response = client.get(url(dicom_file, "full"))
    assert response.status_code == 200
    assert response["X-Preview-Kind"] == "error"
    assert image(response).size == (512, 512)
    assert client.get(f"/admin/dicom/dicomfile/{dicom_file.id}/change/").status_code == 200
