"""The preview view: the API's access rules, the patient data rule, placeholders, audit, the regions variant."""

import io

import pytest
from PIL import Image, ImageChops

from audit.models import AuditLog
from dicom.services import storage
from dicom.services.deid import DeidOptions
from dicom.tests.admin.conftest import PASSWORD, refused_job, store_test_file, store_text_case

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


# --- the regions variant: burned-in text outlined on the image ---

RED = (255, 0, 0)


def rgb(response) -> Image.Image:
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    return image(response).convert("RGB")


def assert_outlined(plain: Image.Image, outlined: Image.Image, regions) -> None:
    """``outlined`` is ``plain`` plus red outlines just outside each ``[frame, x, y, w, h]`` region."""
    assert outlined.size == plain.size
    changed = ImageChops.difference(plain, outlined).getbbox()
    assert changed is not None
    # Nothing changes away from the boxes (a few pixels of outline around them at most).
    left = min(x for _, x, _, _, _ in regions) - 4
    top = min(y for _, _, y, _, _ in regions) - 4
    right = max(x + w for _, x, _, w, _ in regions) + 4
    bottom = max(y + h for _, _, y, _, h in regions) + 4
    assert changed[0] >= left and changed[1] >= top and changed[2] <= right and changed[3] <= bottom
    for _, x, y, _, h in regions:
        assert outlined.getpixel((x - 1, y + h // 2)) == RED
        assert plain.getpixel((x - 1, y + h // 2)) != RED


def test_regions_preview_of_a_cleaned_file_outlines_the_blanked_regions(client, plain_staff, user):
    cleaned = store_text_case(
        "ct-white-top", owner=user, anonymize=True, options=DeidOptions(clean_pixel_data=True)
    )
    regions = cleaned.deid_report["pixel_text"]["text_regions"]
    login(client, plain_staff)
    full = client.get(url(cleaned, "full"))
    response = client.get(url(cleaned, "regions"))
    assert response["X-Preview-Kind"] == "image"
    assert response["Cache-Control"] == "private, max-age=3600"
    assert_outlined(rgb(full), rgb(response), regions)
    # Not cached: the regions variant is rendered on each request.
    assert not storage.exists(storage.preview_key_for(cleaned.id, variant="regions"))
    # Audited as the full preview is: one successful row per request, under the file shown.
    rows = AuditLog.objects.filter(action=AuditLog.Action.PREVIEW, file_id=cleaned.id, username="clerk")
    assert [(row.success, row.status_code, row.reason) for row in rows] == [(True, 200, ""), (True, 200, "")]


def test_regions_preview_of_a_refused_job_is_drawn_on_its_source(client, phi_staff, user):
    source = store_text_case("ct-white-top", owner=user)
    job = refused_job(source, requested_by=phi_staff)
    regions = job.deid_report["pixel_text"]["text_regions"]
    login(client, phi_staff)
    response = client.get(url(job, "regions"))
    assert response["X-Preview-Kind"] == "image"
    assert_outlined(rgb(client.get(url(source, "full"))), rgb(response), regions)
    # The pixels shown are the source's: its own trail says who saw them, and for which job.
    row = AuditLog.objects.get(action=AuditLog.Action.PREVIEW, reason__contains=str(job.id))
    assert row.file_id == source.id and row.success and row.username == "officer"
    assert row.reason == f"regions preview of failed job {job.id}"


def test_regions_preview_of_a_refused_job_is_withheld_without_phi_permission(client, plain_staff, user):
    source = store_text_case("ct-white-top", owner=user)
    job = refused_job(source, requested_by=plain_staff)
    login(client, plain_staff)
    response = client.get(url(job, "regions"))
    assert response.status_code == 200
    assert response["X-Preview-Kind"] == "withheld"
    assert response["Cache-Control"] == "private, no-cache"
    assert image(response).size == (512, 512)  # the placeholder, not the 128x128 source
    row = AuditLog.objects.get(action=AuditLog.Action.PREVIEW)
    assert row.file_id == job.id and not row.success and row.username == "clerk"
    assert row.reason == "regions preview not shown: withheld"


def test_regions_preview_needs_the_source_to_be_visible_too(client, user, other_user):
    from dicom.models import DicomFile
    from dicom.tests.admin.conftest import grant
    from dicom.tests.factories import DicomFileFactory

    # A failed job row alice owns whose source is bob's: she may see the row, not the source's image.
    source = store_text_case("ct-white-top", owner=other_user)
    job = DicomFileFactory(
        owner=user,
        source=source,
        status=DicomFile.Status.FAILED,
        anonymized=True,
        deid_report={"pixel_text": {"text_regions": [[1, 3, 5, 101, 8]], "cleaned": False}},
    )
    grant(user, "dicom.view_phi")
    assert client.login(username="alice", password="alice-password-123")
    assert client.get(url(job, "regions")).status_code == 404
    row = AuditLog.objects.get(action=AuditLog.Action.PREVIEW)
    assert row.file_id == source.id and row.status_code == 404 and not row.success


def test_regions_preview_of_a_file_without_regions_is_a_placeholder(client, plain_staff, user):
    dicom_file = store_test_file("CT_small.dcm", owner=user, anonymize=True)
    login(client, plain_staff)
    response = client.get(url(dicom_file, "regions"))
    assert response["X-Preview-Kind"] == "no-regions"
    assert image(response).size == (512, 512)
    row = AuditLog.objects.get(action=AuditLog.Action.PREVIEW, file_id=dicom_file.id)
    assert not row.success and row.reason == "regions preview not shown: no-regions"
