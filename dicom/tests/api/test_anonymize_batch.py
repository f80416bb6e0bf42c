"""``POST /api/dicom/anonymize``: many files in one request, one worker job per batch of them."""

import uuid

import pytest
from django_tasks_db.models import DBTaskResult

from audit.models import AuditLog
from dicom.models import DicomFile
from dicom.services import storage, task_queue
from dicom.services.anonymization import BatchIncompleteError, give_up_anonymization, run_anonymizations
from dicom.tests.api.test_files import CT_SMALL, MR_SMALL, upload
from dicom.tests.jobs import run_worker

pytestmark = pytest.mark.django_db

URL = "/api/dicom/anonymize"


def _nothing_left_behind(sources: int) -> None:
    assert DicomFile.objects.count() == sources
    assert DBTaskResult.objects.count() == 0
    assert not AuditLog.objects.filter(action="anonymize", success=True).exists()


def test_many_files_are_queued_in_jobs_of_the_batch_size_and_the_worker_completes_them(api, user, settings):
    settings.DICOM_ANONYMIZE_BATCH_JOB_SIZE = 2
    sources = [upload(api, CT_SMALL), upload(api, MR_SMALL), upload(api, CT_SMALL)]

    response = api.post(URL, {"file_ids": sources, "retain_full_dates": True}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"message", "files"}
    assert body["message"] == "3 DICOM files queued for anonymization"
    assert [item["original_file_id"] for item in body["files"]] == sources
    assert {item["status"] for item in body["files"]} == {"processing"}
    derived = [item["anonymized_file_id"] for item in body["files"]]
    jobs = DBTaskResult.objects.filter(task_path=task_queue.ANONYMIZE_FILES).order_by("enqueued_at")
    assert [job.args_kwargs["args"] for job in jobs] == [[derived[:2]], [derived[2:]]]
    queued = AuditLog.objects.filter(action="anonymize", success=True).order_by("id")
    assert [str(row.file_id) for row in queued] == sources
    assert all(
        f"queued as derived file {d} (one of 3" in row.reason for row, d in zip(queued, derived, strict=True)
    )
    assert len({row.request_id for row in queued}) == 1

    run_worker()

    for source, derived_id in zip(sources, derived, strict=True):
        status = api.get(f"/api/dicom/status/{derived_id}").json()
        assert status == {"status": "completed", "file_id": derived_id, "source_file_id": source}
        row = DicomFile.objects.get(pk=derived_id)
        assert row.owner == user and row.anonymized and row.deid_options == ["retain_full_dates"]
        assert b"CompressedSamples" not in b"".join(
            api.get(f"/api/dicom/download/{derived_id}").streaming_content
        )
    assert AuditLog.objects.filter(action="job", success=True, file_id__in=derived).count() == 3


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "file_ids: This field is required."),
        ({"file_ids": []}, "file_ids: name at least one file"),
        ({"file_ids": "not a list"}, "file_ids: must be a list of file ids"),
        ({"file_ids": ["nope"]}, "file_ids: 0: each must be a file id (a UUID)"),
        ({"file_ids": ["{0}", "{0}"]}, "file_ids: names a file more than once"),
        ({"file_ids": ["{0}"], "retain_uids": "perhaps"}, "retain_uids: must be one of true, false, 1, 0"),
        ({"file_ids": ["{0}"], "unknown": True}, "unknown field(s) unknown"),
    ],
)
def test_a_malformed_request_is_a_400_and_leaves_nothing_behind(api, body, detail):
    source = upload(api)
    if isinstance(body.get("file_ids"), list):
        body = {**body, "file_ids": [item.format(source) for item in body["file_ids"]]}
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)
    _nothing_left_behind(1)
    refused = AuditLog.objects.get(action="anonymize")
    assert (refused.success, refused.status_code) == (False, 400)


def test_more_files_than_the_limit_is_a_400(api, settings):
    settings.DICOM_ANONYMIZE_BATCH_MAX = 2
    response = api.post(URL, {"file_ids": [str(uuid.uuid4()) for _ in range(3)]}, format="json")
    assert response.status_code == 400
    assert "at most 2 files in one request" in response.json()["detail"]


def test_one_file_not_found_refuses_the_whole_request_naming_it(api, other_api):
    mine, theirs = upload(api), upload(other_api)
    response = api.post(URL, {"file_ids": [mine, theirs]}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": f"file not found: {theirs}"}
    _nothing_left_behind(2)


def test_one_file_not_completed_refuses_the_whole_request_naming_it(api):
    source = upload(api)
    queued = api.post(f"/api/dicom/anonymize/{source}").json()["anonymized_file_id"]
    response = api.post(URL, {"file_ids": [source, queued]}, format="json")
    assert response.status_code == 409
    assert (
        response.json()["detail"] == f"file {queued} is processing: only a completed file can be anonymized"
    )
    assert DicomFile.objects.count() == 2
    assert DBTaskResult.objects.count() == 1  # the single request's job only


def test_staff_without_the_operator_permission_cannot_queue_another_users_files(api, staff_api):
    source = upload(api)
    response = staff_api.post(URL, {"file_ids": [source]}, format="json")
    assert response.status_code == 403
    assert "dicom.operate" in response.json()["detail"] and source in response.json()["detail"]
    _nothing_left_behind(1)


def test_a_batch_job_given_up_marks_every_file_still_processing_failed(api):
    sources = [upload(api), upload(api)]
    derived = [
        item["anonymized_file_id"]
        for item in api.post(URL, {"file_ids": sources}, format="json").json()["files"]
    ]
    give_up_anonymization(file_id=derived[0], detail="done already")  # one ended before the give-up
    row = DBTaskResult.objects.get(task_path=task_queue.ANONYMIZE_FILES)
    handler = task_queue.give_up_handler(task_queue.ANONYMIZE_FILES)

    handler(row.args_kwargs["args"], "the job was abandoned")

    statuses = dict(DicomFile.objects.filter(pk__in=derived).values_list("pk", "failure_detail"))
    assert statuses == {uuid.UUID(derived[0]): "done already", uuid.UUID(derived[1]): "the job was abandoned"}


def test_a_file_that_fails_unexpectedly_does_not_stop_the_batch_which_is_tried_again(api):
    """A source's stored bytes gone from under it (not a refusal of the file): the others go on."""
    sources = [upload(api), upload(api)]
    answer = api.post(URL, {"file_ids": sources}, format="json").json()
    derived = [item["anonymized_file_id"] for item in answer["files"]]
    storage.local_path(DicomFile.objects.get(pk=sources[0]).storage_key).unlink()

    with pytest.raises(BatchIncompleteError, match=r"^1 of 2 files of the batch failed unexpectedly$"):
        run_anonymizations(file_ids=derived)

    statuses = dict(DicomFile.objects.filter(pk__in=derived).values_list("pk", "status"))
    assert statuses == {uuid.UUID(derived[0]): "processing", uuid.UUID(derived[1]): "completed"}
    # Tried again (as the worker does after the retry delay): the completed file is left alone.
    with pytest.raises(BatchIncompleteError, match=r"^1 of 2 "):
        run_anonymizations(file_ids=derived)
    assert AuditLog.objects.filter(action="job", success=True, file_id=derived[1]).count() == 1
