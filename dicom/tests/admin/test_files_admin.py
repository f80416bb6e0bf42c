"""The DicomFile admin: list, search, masking, one file's page, download, actions (Django's test client)."""

import csv
import io
import uuid

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditLog
from dicom.models import DicomFile
from dicom.services.deid import DeidOptions
from dicom.tests.admin.conftest import PASSWORD, refused_job, store_test_file, store_text_case
from dicom.tests.factories import DicomFileFactory, UserFactory
from dicomweb import viewer as ohif_viewer

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/dicom/dicomfile/"


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def change_url(dicom_file) -> str:
    return f"{CHANGELIST}{dicom_file.pk}/change/"


def make_rows(count: int, owners) -> None:
    DicomFile.objects.bulk_create(
        DicomFileFactory.build(
            owner=owners[n % len(owners)],
            patient_id=f"PID{n:06d}",
            modality=("CT", "MR", "US")[n % 3],
            storage_key=f"dicom/xx/{n}.dcm",
        )
        for n in range(count)
    )


def changelist_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST)
    assert response.status_code == 200
    return len(queries)


def test_changelist_query_count_does_not_grow_with_rows(client, phi_staff):
    login(client, phi_staff)
    owners = [UserFactory() for _ in range(5)]
    make_rows(3, owners)
    client.get(CHANGELIST)  # warm caches (content types, permissions) so both counts compare like for like
    few = changelist_queries(client)
    make_rows(150, owners + [UserFactory() for _ in range(20)])
    many = changelist_queries(client)
    assert many == few
    # The page has a full page of rows and no "N total" count over the whole table.
    response = client.get(CHANGELIST)
    assert response.content.count(b'class="dicom-thumb"') == 50
    assert b"153 total" not in response.content


def test_list_shows_thumbnails_and_columns(client, phi_staff, user):
    dicom_file = store_test_file("CT_small.dcm", owner=user, study_type="ct")
    response = login(client, phi_staff).get(CHANGELIST)
    html = response.content.decode()
    assert f'src="/dicom/files/{dicom_file.id}/preview/thumb.png" loading="lazy"' in html
    for column in ("field-modality", "field-study_type", "field-status", "field-anonymized", "field-owner"):
        assert column in html
    assert dicom_file.patient_id and dicom_file.patient_id in html


def test_list_masks_patient_id_of_originals_without_permission(client, plain_staff, user):
    original = store_test_file("CT_small.dcm", owner=user)
    deidentified = store_test_file("MR_small.dcm", owner=user, anonymize=True)
    html = login(client, plain_staff).get(CHANGELIST).content.decode()
    assert original.patient_id and original.patient_id not in html
    assert "•••" in html
    assert deidentified.patient_id in html  # a pseudonym, not patient data


@pytest.mark.parametrize("field", ["id", "study_instance_uid", "series_instance_uid", "sop_instance_uid"])
def test_search_by_file_id_and_uids(client, plain_staff, user, field):
    wanted = store_test_file("CT_small.dcm", owner=user)
    store_test_file("MR_small.dcm", owner=user)
    response = login(client, plain_staff).get(CHANGELIST, {"q": str(getattr(wanted, field))})
    assert list(response.context["cl"].result_list) == [wanted]


def test_search_by_patient_id_needs_the_permission(client, phi_staff, plain_staff, user):
    wanted = store_test_file("CT_small.dcm", owner=user)
    store_test_file("MR_small.dcm", owner=user)
    response = login(client, phi_staff).get(CHANGELIST, {"q": wanted.patient_id})
    assert list(response.context["cl"].result_list) == [wanted]
    client.logout()
    response = login(client, plain_staff).get(CHANGELIST, {"q": wanted.patient_id})
    assert list(response.context["cl"].result_list) == []


def test_filters_narrow_the_list(client, plain_staff):
    owners = [UserFactory()]
    make_rows(6, owners)
    response = login(client, plain_staff).get(CHANGELIST, {"modality__exact": "MR"})
    assert {f.modality for f in response.context["cl"].result_list} == {"MR"}
    assert len(response.context["cl"].result_list) == 2
    response = client.get(CHANGELIST, {"anonymized__exact": "1"})
    assert len(response.context["cl"].result_list) == 0


def test_file_page_shows_image_metadata_links_and_audit(client, phi_staff, user):
    source = store_test_file("CT_small.dcm", owner=user)
    derived = DicomFileFactory(source=source, owner=user, anonymized=True)
    response = login(client, phi_staff).get(change_url(source))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'src="/dicom/files/{source.id}/preview/full.png"' in html
    assert 'id="dicom-metadata"' in html
    for group in ("Patient", "Study", "Series", "Image"):
        assert f'scope="colgroup">{group}</th>' in html
    assert "Patient&#x27;s Name" in html and "(0010,0010)" in html
    assert source.metadata["patient_name"] in html
    assert "CT Image Storage" in html
    assert change_url(derived) in html
    assert f"/admin/dicom/dicomfile/{source.id}/download/" in html
    assert 'name="_save"' not in html  # read-only: nothing to save
    # Viewing the page is audited, and the page lists the file's own trail (the upload, this view).
    assert AuditLog.objects.filter(
        action=AuditLog.Action.VIEW, file_id=source.id, username="officer"
    ).exists()
    assert 'id="dicom-audit"' in html and ">Upload<" in html


def test_file_page_masks_patient_fields_without_permission(client, plain_staff, user):
    source = store_test_file("CT_small.dcm", owner=user)
    html = login(client, plain_staff).get(change_url(source)).content.decode()
    assert source.metadata["patient_name"] not in html
    assert source.patient_id not in html
    assert html.count("•••") >= 3
    assert "patient data masked" in html
    assert "Download (not available" in html
    assert "Preview withheld" in html


def region_rows(regions) -> list[str]:
    """The table rows the page shows for ``[frame, x, y, w, h]`` text regions."""
    return [
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in ("text", *region)) + "</tr>" for region in regions
    ]


def test_file_page_of_a_cleaned_file_says_where_text_was_blanked(client, plain_staff, user):
    cleaned = store_text_case(
        "ct-white-top", owner=user, anonymize=True, options=DeidOptions(clean_pixel_data=True)
    )
    report = cleaned.deid_report["pixel_text"]
    assert report["cleaned"] and len(report["text_regions"]) == 1 and report["device_regions"] == []
    html = login(client, plain_staff).get(change_url(cleaned)).content.decode()
    assert 'id="dicom-burned-in-text"' in html
    assert "Cleaned: 1 region blanked on every frame (1 region where the scan found text, on frame 1)" in html
    for row in region_rows(report["text_regions"]):
        assert row in html
    assert f'src="/dicom/files/{cleaned.id}/preview/regions.png"' in html
    assert "every region outlined" in html
    # The burned-in text itself (a patient name and number in the test set) never reaches the page.
    assert "DOE" not in html and "4471823" not in html


def test_file_page_of_a_refused_job_says_where_text_was_found(client, phi_staff, plain_staff, user):
    source = store_text_case("ct-white-top", owner=user)
    job = refused_job(source, requested_by=phi_staff)
    report = job.deid_report["pixel_text"]
    assert not report["cleaned"] and job.failure_detail.startswith("burned-in text was found")
    html = login(client, phi_staff).get(change_url(job)).content.decode()
    assert 'id="dicom-burned-in-text"' in html
    assert "Refused: burned-in text was found in 1 region, on frame 1 (frames scanned: 1)." in html
    assert "the boxes refer to the source file&#x27;s image" in html
    for row in region_rows(report["text_regions"]):
        assert row in html
    assert f'src="/dicom/files/{job.id}/preview/regions.png"' in html
    assert "Image withheld" not in html
    # Without the patient data permission the regions are listed, and the page says why the image is not.
    client.logout()
    html = login(client, plain_staff).get(change_url(job)).content.decode()
    assert "Refused: burned-in text was found in 1 region" in html
    assert "Image withheld: the boxes lie on the source" in html


def test_file_page_says_when_pixels_were_not_checked(client, plain_staff, user):
    kept = store_text_case(
        "ct-white-top", owner=user, anonymize=True, options=DeidOptions(accept_burned_in_annotation=True)
    )
    html = login(client, plain_staff).get(change_url(kept)).content.decode()
    assert 'id="dicom-burned-in-text"' in html
    assert "Pixels not checked" in html and "Patient Identity Removed (0012,0062) is NO" in html
    assert "/preview/regions.png" not in html and 'id="dicom-text-regions"' not in html


def test_file_page_without_burned_in_text_has_no_such_section(client, plain_staff, user):
    clean = store_test_file("CT_small.dcm", owner=user, anonymize=True)
    assert clean.deid_report["pixel_text"]["scanned"] and not clean.deid_report["pixel_text"]["text_regions"]
    html = login(client, plain_staff).get(change_url(clean)).content.decode()
    assert 'id="dicom-burned-in-text"' not in html and "/preview/regions.png" not in html


def test_download_is_audited_and_refused_for_originals_without_permission(
    client, phi_staff, plain_staff, user
):
    original = store_test_file("CT_small.dcm", owner=user)
    response = login(client, phi_staff).get(f"{CHANGELIST}{original.id}/download/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom"
    assert f'filename="{original.id}.dcm"' in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    assert len(body) == original.size and body[128:132] == b"DICM"
    assert AuditLog.objects.filter(action="download", file_id=original.id, success=True).count() == 1
    client.logout()
    response = login(client, plain_staff).get(f"{CHANGELIST}{original.id}/download/")
    assert response.status_code == 302
    row = AuditLog.objects.get(action="download", file_id=original.id, success=False)
    assert row.status_code == 403 and row.username == "clerk"


def test_download_of_unknown_file_is_404(client, phi_staff):
    response = login(client, phi_staff).get(f"{CHANGELIST}{uuid.uuid4()}/download/")
    assert response.status_code == 404


def test_no_add_change_or_delete(client, phi_staff, user):
    source = store_test_file("CT_small.dcm", owner=user)
    login(client, phi_staff)
    assert client.get(f"{CHANGELIST}add/").status_code == 403
    assert client.get(f"{CHANGELIST}{source.id}/delete/").status_code == 403
    response = client.post(change_url(source), {"study_type": "changed"})
    assert response.status_code == 403
    source.refresh_from_db()
    assert source.study_type == "general"


def run_worker() -> None:
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--interval", "0")


@pytest.mark.django_db(transaction=True)  # the real worker closes its connection between polls
def test_anonymize_selected_asks_for_options_then_queues_jobs(client, plain_staff, user):
    first = store_test_file("CT_small.dcm", owner=user)
    second = store_test_file("MR_small.dcm", owner=user)
    processing = DicomFileFactory(owner=user, status=DicomFile.Status.PROCESSING)
    login(client, plain_staff)
    selected = [str(first.id), str(second.id), str(processing.id)]
    form_page = client.post(CHANGELIST, {"action": "anonymize_selected", "_selected_action": selected})
    assert form_page.status_code == 200
    html = form_page.content.decode()
    assert 'name="retain_uids"' in html and 'name="clean_descriptors"' in html
    assert "3 files selected" in html

    response = client.post(
        CHANGELIST,
        {"action": "anonymize_selected", "_selected_action": selected, "apply": "1", "retain_uids": "on"},
        follow=True,
    )
    assert "Queued 2 files for anonymization. Skipped 1 not completed" in response.content.decode()
    derived = DicomFile.objects.filter(source__in=[first, second])
    assert derived.count() == 2
    assert all(d.deid_options == ["retain_uids"] for d in derived)
    assert AuditLog.objects.filter(action="anonymize", username="clerk", success=True).count() == 2
    assert AuditLog.objects.filter(action="bulk_anonymize", reason__contains="2 queued, 1 skipped").exists()
    run_worker()
    assert {d.status for d in DicomFile.objects.filter(source__in=[first, second])} == {"completed"}


def test_anonymize_selected_rejects_contradictory_options(client, plain_staff, user):
    source = store_test_file("CT_small.dcm", owner=user)
    login(client, plain_staff)
    response = client.post(
        CHANGELIST,
        {
            "action": "anonymize_selected",
            "_selected_action": [str(source.id)],
            "apply": "1",
            "retain_full_dates": "on",
            "retain_modified_dates": "on",
        },
    )
    assert response.status_code == 200
    assert "alternatives" in response.content.decode()
    assert not DicomFile.objects.filter(source=source).exists()


def test_anonymize_action_needs_change_permission(client, django_user_model, user):
    from dicom.tests.admin.conftest import VIEWER_PERMISSIONS, grant

    viewer = grant(
        django_user_model.objects.create_user(username="viewer", password=PASSWORD, is_staff=True),
        *VIEWER_PERMISSIONS,
    )
    source = store_test_file("CT_small.dcm", owner=user)
    login(client, viewer)
    assert b"anonymize_selected" not in client.get(CHANGELIST).content
    client.post(
        CHANGELIST, {"action": "anonymize_selected", "_selected_action": [str(source.id)], "apply": "1"}
    )
    assert not DicomFile.objects.filter(source=source).exists()


def test_csv_export_masks_patient_ids_of_originals(client, plain_staff, user):
    original = store_test_file("CT_small.dcm", owner=user)
    response = login(client, plain_staff).post(
        CHANGELIST, {"action": "export_selected_csv", "_selected_action": [str(original.id)], "index": "0"}
    )
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][0] == "file_id" and rows[0][-1] == "patient_id"
    assert rows[1][0] == str(original.id) and rows[1][-1] == "•••"
    assert original.patient_id not in "".join(rows[1])
    assert AuditLog.objects.filter(action="export", reason="admin CSV export of 1 files").exists()


def test_anonymize_selected_refuses_more_than_the_bound(client, plain_staff, user, monkeypatch):
    import dicom.admin

    monkeypatch.setattr(dicom.admin, "MAX_BULK_ANONYMIZE", 1)
    files = [store_test_file("CT_small.dcm", owner=user), store_test_file("MR_small.dcm", owner=user)]
    response = login(client, plain_staff).post(
        CHANGELIST,
        {"action": "anonymize_selected", "_selected_action": [str(f.id) for f in files], "apply": "1"},
        follow=True,
    )
    assert "2 files selected: at most 1 can be anonymized at once" in response.content.decode()
    assert not DicomFile.objects.filter(source__in=files).exists()


@pytest.mark.skipif(not ohif_viewer.installed(), reason="the viewer is not installed")
def test_file_page_and_list_link_the_study_to_the_viewer_when_the_user_may_see_it(
    client, phi_staff, plain_staff, user
):
    original = store_test_file("CT_small.dcm", owner=user)
    link = f"/viewer/viewer?StudyInstanceUIDs={original.study_instance_uid}"
    page = login(client, phi_staff).get(change_url(original)).content.decode()
    assert "Open study in viewer" in page and link in page
    assert link in client.get(CHANGELIST).content.decode()
    # Staff without the patient data permission get no link to an original (its frames are theirs to refuse).
    client.logout()
    page = login(client, plain_staff).get(change_url(original)).content.decode()
    assert "Open study in viewer" not in page
