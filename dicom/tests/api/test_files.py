import uuid

import pytest
from django_tasks_db.models import DBTaskResult
from pydicom import dcmread
from pydicom.data import get_testdata_file

from audit.models import AuditLog
from dicom.models import DicomFile
from dicom.services.anonymization import run_anonymization
from dicom.tests.jobs import run_worker
from dicom.tests.services.dicom_builders import TEXT_CASES, build_text_case

pytestmark = pytest.mark.django_db

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")


def upload(client, path=CT_SMALL, **fields) -> str:
    with open(path, "rb") as handle:
        response = client.post("/api/dicom/upload", {"file": handle, **fields}, format="multipart")
    assert response.status_code == 200, response.content
    return response.json()["file_id"]


def test_behind_a_front_end_a_download_names_the_file_for_it_and_is_audited(api, user, settings):
    settings.DICOM_DOWNLOAD_ACCEL_PREFIX = "/protected/"
    file_id = upload(api)
    key = DicomFile.objects.get(pk=file_id).storage_key
    response = api.get(f"/api/dicom/download/{file_id}")
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected/{key}"
    assert response["Content-Type"] == "application/dicom"
    assert response["Content-Disposition"] == f'attachment; filename="{file_id}.dcm"'
    assert response.content == b""  # the front end sends the bytes
    row = AuditLog.objects.filter(action="download").get()
    assert (row.user, row.success, str(row.file_id)) == (user, True, file_id)
    # A refused download names nothing for the front end.
    other = upload(api)
    DicomFile.objects.filter(pk=other).update(owner=None)
    refused = api.get(f"/api/dicom/download/{other}")
    assert refused.status_code == 404 and "X-Accel-Redirect" not in refused


@pytest.mark.parametrize("suffix", ["", "/"])
@pytest.mark.parametrize("endpoint", ["metadata", "download", "status"])
def test_get_endpoints_answer_with_and_without_trailing_slash(api, endpoint, suffix):
    file_id = upload(api)
    response = api.get(f"/api/dicom/{endpoint}/{file_id}{suffix}")
    assert response.status_code == 200


def test_metadata_is_flat_with_iso_dates_and_nulls(api):
    file_id = upload(api, MR_SMALL, study_type="mri")
    body = api.get(f"/api/dicom/metadata/{file_id}").json()
    for key in (
        "patient_id",
        "patient_name",
        "patient_birth_date",
        "patient_sex",
        "patient_age",
        "study_date",
        "study_time",
        "study_description",
        "accession_number",
        "modality",
        "study_instance_uid",
        "series_instance_uid",
        "sop_instance_uid",
        "sop_class_uid",
        "transfer_syntax_uid",
        "rows",
        "columns",
        "number_of_frames",
        "manufacturer",
        "institution_name",
        "body_part_examined",
        "file_id",
        "study_type",
        "anonymized",
        "size",
    ):
        assert key in body
    assert not any(isinstance(value, dict) for value in body.values())
    assert body["modality"] == "MR"
    assert body["study_type"] == "mri"
    assert body["number_of_frames"] == 1
    assert body["study_date"] is None or len(body["study_date"]) == 10
    assert body["accession_number"] is None or isinstance(body["accession_number"], str)


def test_status_of_an_upload(api):
    file_id = upload(api)
    response = api.get(f"/api/dicom/status/{file_id}")
    assert response.json() == {"status": "completed", "file_id": file_id}


def test_download_streams_the_stored_file_with_a_safe_filename(api):
    file_id = upload(api)
    response = api.get(f"/api/dicom/download/{file_id}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom"
    assert response["Content-Disposition"] == f'attachment; filename="{file_id}.dcm"'
    content = b"".join(response.streaming_content)
    assert content[:128] == bytes(128)
    assert content[128:132] == b"DICM"
    assert int(response["Content-Length"]) == len(content)


@pytest.mark.parametrize("endpoint", ["metadata", "download", "status"])
@pytest.mark.parametrize("file_id", ["not-a-uuid", "12345", str(uuid.uuid4())])
def test_unknown_or_malformed_ids_are_a_json_404(api, user, endpoint, file_id):
    response = api.get(f"/api/dicom/{endpoint}/{file_id}")
    assert response.status_code == 404
    assert response.json() == {"detail": "file not found"}
    audit = AuditLog.objects.get()
    assert (audit.action, audit.success, audit.status_code, audit.user) == (endpoint, False, 404, user)


def test_anonymize_of_a_malformed_id_is_a_json_404(api):
    response = api.post("/api/dicom/anonymize/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "file not found"}
    assert DBTaskResult.objects.count() == 0


@pytest.mark.parametrize("endpoint", ["metadata", "download", "status"])
def test_another_users_file_is_not_found_but_staff_see_it(api, other_api, staff_api, endpoint):
    file_id = upload(api)
    hidden = other_api.get(f"/api/dicom/{endpoint}/{file_id}")
    assert hidden.status_code == 404
    assert hidden.json() == {"detail": "file not found"}
    seen = staff_api.get(f"/api/dicom/{endpoint}/{file_id}")
    # Staff see every file; an original's bytes need the patient data permission.
    assert seen.status_code == (403 if endpoint == "download" else 200)


@pytest.fixture
def role_clients(api, other_api, staff_api, django_user_model):
    from django.contrib.auth.models import Permission

    from conftest import _client_for

    phi = django_user_model.objects.create_user(username="phi", password="phi-password-123", is_staff=True)
    phi.user_permissions.add(Permission.objects.get(codename="view_phi"))
    operator = django_user_model.objects.create_user(username="op", password="op-password-123", is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="operate"))
    return {
        "owner": api,
        "other": other_api,
        "staff": staff_api,
        "phi": _client_for(phi),
        "operator": _client_for(operator),
    }


# role -> (metadata status, patient name shown, download status, anonymize status)
ACCESS_TABLE = {
    "owner": (200, True, 200, 200),
    "other": (404, None, 404, 404),
    "staff": (200, False, 403, 403),
    "phi": (200, True, 200, 403),
    "operator": (200, False, 403, 200),
}


@pytest.mark.parametrize("role", sorted(ACCESS_TABLE))
def test_the_access_rule_for_each_role(role, role_clients):
    file_id = upload(role_clients["owner"])
    client = role_clients[role]
    metadata_status, name_shown, download_status, anonymize_status = ACCESS_TABLE[role]
    metadata = client.get(f"/api/dicom/metadata/{file_id}")
    assert metadata.status_code == metadata_status
    if metadata_status == 200:
        assert (metadata.json()["patient_name"] != "•••") is name_shown
        assert metadata.json()["modality"] == "CT"  # not patient data: never masked
    download = client.get(f"/api/dicom/download/{file_id}")
    assert download.status_code == download_status
    if download_status == 403:
        assert "dicom.view_phi" in download.json()["detail"]
    anonymize = client.post(f"/api/dicom/anonymize/{file_id}")
    assert anonymize.status_code == anonymize_status
    if anonymize_status == 403:
        assert "dicom.operate" in anonymize.json()["detail"]


def test_another_user_cannot_anonymize_my_file(api, other_api):
    file_id = upload(api)
    response = other_api.post(f"/api/dicom/anonymize/{file_id}")
    assert response.status_code == 404
    assert DicomFile.objects.count() == 1
    assert DBTaskResult.objects.count() == 0


def test_anonymize_queues_a_job_that_the_worker_completes(api, user):
    file_id = upload(api)

    response = api.post(f"/api/dicom/anonymize/{file_id}")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"message", "original_file_id", "anonymized_file_id", "status"}
    assert body["message"] == "DICOM file queued for anonymization"
    assert body["original_file_id"] == file_id
    assert body["status"] == "processing"
    derived_id = body["anonymized_file_id"]
    assert DBTaskResult.objects.filter(args_kwargs__args=[derived_id]).count() == 1
    assert api.get(f"/api/dicom/status/{derived_id}").json() == {
        "status": "processing",
        "file_id": derived_id,
        "source_file_id": file_id,
    }
    pending = api.get(f"/api/dicom/download/{derived_id}")
    assert pending.status_code == 409
    assert "processing" in pending.json()["detail"]

    run_worker()

    status = api.get(f"/api/dicom/status/{derived_id}").json()
    assert status["status"] == "completed"
    derived = DicomFile.objects.get(pk=derived_id)
    assert derived.source_id == uuid.UUID(file_id)
    assert derived.owner == user and derived.anonymized
    downloaded = b"".join(api.get(f"/api/dicom/download/{derived_id}").streaming_content)
    assert b"CompressedSamples" not in downloaded
    metadata = api.get(f"/api/dicom/metadata/{derived_id}").json()
    assert metadata["anonymized"] is True
    assert metadata["patient_name"] != "CompressedSamples^CT1"
    actions = list(AuditLog.objects.filter(file_id=derived_id).values_list("action", "success"))
    assert ("job", True) in actions
    queued = AuditLog.objects.get(action="anonymize", file_id=file_id)
    assert queued.success and queued.reason == f"queued as derived file {derived_id}"


def test_anonymize_accepts_options_as_json(api):
    file_id = upload(api)
    response = api.post(f"/api/dicom/anonymize/{file_id}", {"retain_full_dates": True}, format="json")
    assert response.status_code == 200
    derived = DicomFile.objects.get(pk=response.json()["anonymized_file_id"])
    assert derived.deid_options == ["retain_full_dates"]
    run_worker()
    derived.refresh_from_db()
    assert derived.metadata["study_date"] == "2004-01-19"


def test_anonymize_rejects_bad_options_and_queues_nothing(api):
    file_id = upload(api)
    response = api.post(f"/api/dicom/anonymize/{file_id}", {"retain_uids": "perhaps"}, format="json")
    assert response.status_code == 400
    assert "retain_uids" in response.json()["detail"]
    assert DicomFile.objects.count() == 1
    assert DBTaskResult.objects.count() == 0


def test_a_failing_job_marks_the_file_failed_with_a_detail(api, tmp_path):
    dataset = dcmread(CT_SMALL)
    dataset.BurnedInAnnotation = "YES"
    path = tmp_path / "burned.dcm"
    dataset.save_as(path, enforce_file_format=True)
    file_id = upload(api, path)
    derived_id = api.post(f"/api/dicom/anonymize/{file_id}").json()["anonymized_file_id"]

    run_worker()

    status = api.get(f"/api/dicom/status/{derived_id}").json()
    assert status["status"] == "failed"
    assert "burned" in status["detail"].lower()
    download = api.get(f"/api/dicom/download/{derived_id}")
    assert download.status_code == 409
    assert "failed" in download.json()["detail"]
    assert not DicomFile.objects.get(pk=derived_id).storage_key
    failure = AuditLog.objects.get(file_id=derived_id, action="job")
    assert failure.success is False and "burned" in failure.reason.lower()


def test_a_job_refused_for_burned_in_text_keeps_where_it_was_found(api, tmp_path):
    case = next(case for case in TEXT_CASES if case.name == "ct-multiframe-middle")
    file_id = upload(api, build_text_case(case, tmp_path / "text.dcm"))
    derived_id = api.post(f"/api/dicom/anonymize/{file_id}").json()["anonymized_file_id"]

    run_worker()

    status = api.get(f"/api/dicom/status/{derived_id}").json()
    assert status["status"] == "failed"
    assert "burned-in text was found in the pixel data; resend with clean_pixel_data" in status["detail"]
    assert "Text at frame 3 at x=" in status["detail"]
    derived = DicomFile.objects.get(pk=derived_id)
    assert derived.deid_report["pixel_text"]["text_regions"][0][0] == 3
    assert derived.deid_report["pixel_text"]["scanned_frames"] == [1, 3, 5]

    cleaned_id = api.post(
        f"/api/dicom/anonymize/{file_id}", {"clean_pixel_data": True}, format="json"
    ).json()["anonymized_file_id"]
    run_worker()
    assert api.get(f"/api/dicom/status/{cleaned_id}").json()["status"] == "completed"
    assert DicomFile.objects.get(pk=cleaned_id).deid_report["pixel_text"]["cleaned"] is True


def test_a_job_that_already_ran_does_nothing_more(api):
    file_id = upload(api)
    derived_id = api.post(f"/api/dicom/anonymize/{file_id}").json()["anonymized_file_id"]
    run_worker()
    derived = DicomFile.objects.get(pk=derived_id)

    assert run_anonymization(file_id=derived_id) == "completed"
    again = DicomFile.objects.get(pk=derived_id)
    assert again.updated_at == derived.updated_at
    assert AuditLog.objects.filter(file_id=derived_id, action="job").count() == 1


def test_anonymizing_a_processing_file_is_refused(api):
    file_id = upload(api)
    derived_id = api.post(f"/api/dicom/anonymize/{file_id}").json()["anonymized_file_id"]
    response = api.post(f"/api/dicom/anonymize/{derived_id}")
    assert response.status_code == 409
    assert "processing" in response.json()["detail"]


def test_every_action_is_audited_without_patient_data(api, user):
    file_id = upload(api)
    api.get(f"/api/dicom/metadata/{file_id}")
    api.get(f"/api/dicom/status/{file_id}")
    b"".join(api.get(f"/api/dicom/download/{file_id}").streaming_content)
    derived_id = api.post(f"/api/dicom/anonymize/{file_id}").json()["anonymized_file_id"]

    rows = AuditLog.objects.filter(file_id=file_id).order_by("id")
    # The anonymization is audited against its source, naming the derived file.
    assert [row.action for row in rows] == ["upload", "metadata", "status", "download", "anonymize"]
    assert rows.last().reason == f"queued as derived file {derived_id}"
    assert all(row.success and row.user == user and row.username == "alice" for row in rows)
    assert all(row.client_address == "127.0.0.1" for row in rows)
    assert AuditLog.objects.filter(action="anonymize", success=True).count() == 1
    dump = " ".join(f"{row.reason} {row.username}" for row in AuditLog.objects.all())
    assert "CompressedSamples" not in dump
