"""Jobs that survive their workers: the reaper, retries with a bound, giving up with a reason."""

import datetime as dt
import threading
import time
import uuid

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from audit.models import AuditLog
from audit.services import Actor
from dicom.models import BulkItem, BulkRun, DicomFile, WorkerHeartbeat
from dicom.services import jobs, task_queue
from dicom.services.anonymization import request_anonymization
from dicom.services.deid import DeidOptions
from dicom.services.ingest import IngestRequest, ingest_file
from dicom.tests.commands.conftest import write_instance
from dicom.tests.factories import DicomFileFactory
from dicom.tests.jobs import make_worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(user, tmp_path):
    """A derived file ``processing`` with its job READY, from a stored original of ``user``."""
    staged = write_instance(tmp_path / "original.dcm", 1)
    request = IngestRequest(
        staged_path=staged, sha256=None, anonymize=False, study_type="ct", options=DeidOptions()
    )
    original = ingest_file(request=request, actor=Actor(user=user))
    derived = request_anonymization(actor=Actor(user=user), source=original, options=DeidOptions())
    return derived, DBTaskResult.objects.get()


def claim(task: DBTaskResult, worker: str, *, started: dt.datetime) -> None:
    task.status, task.started_at = "RUNNING", started
    task.worker_ids = [*task.worker_ids, worker]
    task.save()


def test_a_running_job_of_a_live_worker_is_left_alone(queued):
    _, task = queued
    now = timezone.now()
    jobs.beat(worker_id="alive", now=now)
    claim(task, "alive", started=now - dt.timedelta(hours=1))
    assert jobs.reap_abandoned_jobs(now=now).requeued == []
    task.refresh_from_db()
    assert task.status == "RUNNING"


# The worker runs in-process: its heartbeat thread has its own connection, so rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_a_running_job_of_a_stale_worker_goes_back_to_the_queue(queued, settings):
    derived, task = queued
    now = timezone.now()
    jobs.beat(worker_id="gone", now=now - dt.timedelta(seconds=settings.DICOM_WORKER_STALE_SECONDS + 1))
    claim(task, "gone", started=now - dt.timedelta(minutes=5))

    assert jobs.reap_abandoned_jobs(now=now).requeued == [str(task.pk)]
    task.refresh_from_db()
    assert task.status == "READY" and task.started_at is None and task.worker_ids == ["gone"]
    derived.refresh_from_db()
    assert derived.status == DicomFile.Status.PROCESSING

    # The requeued job runs (here in-process) and completes the file once.
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--interval", "0", verbosity=0)
    task.refresh_from_db()
    derived.refresh_from_db()
    assert task.status == "SUCCESSFUL" and len(task.worker_ids) == 2
    assert derived.status == DicomFile.Status.COMPLETED
    assert AuditLog.objects.filter(file_id=derived.id, action=AuditLog.Action.JOB).count() == 1


def test_a_worker_without_heartbeat_is_gone_once_its_job_is_older_than_the_stale_limit(queued, settings):
    _, task = queued
    now = timezone.now()
    claim(task, "never-beat", started=now - dt.timedelta(seconds=5))
    assert jobs.reap_abandoned_jobs(now=now).requeued == []
    later = now + dt.timedelta(seconds=settings.DICOM_WORKER_STALE_SECONDS + 10)
    assert jobs.reap_abandoned_jobs(now=later).requeued == [str(task.pk)]


def test_a_restarted_worker_reclaims_its_own_jobs(queued):
    _, task = queued
    now = timezone.now()
    jobs.beat(worker_id="same-id", now=now)
    claim(task, "same-id", started=now)
    assert jobs.reap_abandoned_jobs(now=now, dead_worker_ids=("same-id",)).requeued == [str(task.pk)]


def test_a_job_whose_workers_keep_dying_is_given_up_with_the_reason(queued, settings):
    derived, task = queued
    settings.DICOM_JOB_MAX_ATTEMPTS = 3
    now = timezone.now()
    for attempt in range(3):
        claim(task, f"w{attempt}", started=now - dt.timedelta(hours=1))
        result = jobs.reap_abandoned_jobs(now=now)
        task.refresh_from_db()
    assert result.gave_up == [str(task.pk)]
    assert task.status == "FAILED" and "gave up after 3 attempts" in task.traceback
    derived.refresh_from_db()
    assert derived.status == DicomFile.Status.FAILED
    assert derived.failure_detail.startswith("gave up after 3 attempts")
    failure = AuditLog.objects.get(file_id=derived.id, action=AuditLog.Action.JOB)
    assert not failure.success and "gave up after 3 attempts" in failure.reason


# The worker runs in-process: its heartbeat thread has its own connection, so rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_a_job_that_raises_is_retried_then_given_up(queued, settings, storage_root):
    derived, task = queued
    settings.DICOM_JOB_MAX_ATTEMPTS = 2
    settings.DICOM_JOB_RETRY_DELAY_SECONDS = 0
    # A real failure: the source's stored bytes are gone, so reading them raises (not a DicomServiceError).
    (storage_root / derived.source.storage_key).unlink()
    worker = ("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--interval", "0")

    call_command(*worker, "--max-tasks", "1", verbosity=0)
    task.refresh_from_db()
    derived.refresh_from_db()
    assert task.status == "READY" and len(task.worker_ids) == 1
    assert derived.status == DicomFile.Status.PROCESSING

    call_command(*worker, "--max-tasks", "1", verbosity=0)
    task.refresh_from_db()
    derived.refresh_from_db()
    assert task.status == "FAILED" and len(task.worker_ids) == 2
    assert derived.status == DicomFile.Status.FAILED
    assert derived.failure_detail.startswith("gave up after 2 attempts")
    assert not (storage_root / "dicom" / str(derived.id)[:2] / f"{derived.id}.dcm").exists()


def test_a_given_up_bulk_job_marks_its_unfinished_items_failed(user):
    run = BulkRun.objects.create(fingerprint="f" * 64, source=BulkRun.Source.DIRECTORY, selection={})
    done = BulkItem.objects.create(run=run, source_path="/a", status=BulkItem.Status.DONE)
    queued = BulkItem.objects.create(run=run, source_path="/b", status=BulkItem.Status.QUEUED)
    task = DBTaskResult.objects.create(
        args_kwargs={"args": [str(run.pk), [done.pk, queued.pk]], "kwargs": {}},
        task_path="dicom.tasks.anonymize_bulk_items_task",
        backend_name="default",
        run_after=timezone.now(),
        status="RUNNING",
        worker_ids=["a", "b", "c"],
        started_at=timezone.now() - dt.timedelta(hours=1),
    )
    assert jobs.reap_abandoned_jobs().gave_up == [str(task.pk)]
    queued.refresh_from_db()
    done.refresh_from_db()
    assert queued.status == BulkItem.Status.FAILED and queued.detail.startswith("gave up after 3 attempts")
    assert done.status == BulkItem.Status.DONE


# The worker runs in-process: its heartbeat thread has its own connection, so rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_a_worker_beats_and_forgets_itself_when_it_stops_cleanly(queued):
    call_command(
        "db_worker", "--batch", "--no-startup-delay", "--no-reload", "--interval", "0", "--worker-id", "tidy"
    )
    assert not WorkerHeartbeat.objects.filter(worker_id="tidy").exists()
    assert DBTaskResult.objects.get().worker_ids == ["tidy"]


def test_the_admin_lists_jobs_by_status_and_the_bulk_models(queued, staff_user, client):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    response = client.get("/admin/django_tasks_database/dbtaskresult/", {"status__exact": "READY"})
    assert response.status_code == 200
    assert str(queued[1].pk) in response.content.decode()
    assert (
        str(queued[1].pk)
        not in client.get("/admin/django_tasks_database/dbtaskresult/?status__exact=FAILED").content.decode()
    )
    for path in ("bulkrun", "bulkitem", "workerheartbeat"):
        assert client.get(f"/admin/dicom/{path}/").status_code == 200


def test_a_stored_original_the_validator_refuses_fails_its_job_and_bulk_item(user, tmp_path, storage_root):
    # Put in storage by something other than an upload (an older version, a restore): cut short.
    from pydicom.data import get_testdata_file

    from dicom.services import bulk, storage
    from dicom.services.anonymization import run_anonymization
    from dicom.tests.services.dicom_builders import truncate_copy

    source = get_testdata_file("MR_small.dcm")
    cut = tmp_path / "cut.dcm"
    truncate_copy(source, cut, 4000)
    original = DicomFileFactory(owner=user, anonymized=False)
    stored = storage.store_staged_file(staged_path=cut, key=storage.key_for(original.id))
    DicomFile.objects.filter(pk=original.pk).update(storage_key=stored.key, size=stored.size)
    original.refresh_from_db()
    options = DeidOptions(accept_burned_in_annotation=True)  # no pixel scan: only the validator can tell

    derived = request_anonymization(actor=Actor(user=user), source=original, options=options)
    assert run_anonymization(file_id=derived.id) == DicomFile.Status.FAILED
    derived.refresh_from_db()
    assert "truncated" in derived.failure_detail or "cut short" in derived.failure_detail

    unit = bulk.WorkUnit(item_id=1, output_id=str(uuid.uuid4()), source_key=original.storage_key)
    spec = bulk.WorkSpec(options=tuple(options.to_names()), output_dir=None, study_type="general")
    outcome = bulk.process_unit(spec, unit, options=options, key=b"k" * 32)
    assert outcome.status == BulkItem.Status.REFUSED and outcome.detail


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite's in-memory test database locks whole tables between threads (shared cache)",
)
@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_takes_jobs_queued_later_and_goes_on_waiting():

    worker = make_worker(
        worker_class=task_queue.QueueWorker, worker_id="idle-worker", interval=0.05, batch=False
    )

    def run() -> None:
        try:
            worker.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        for _ in range(2):  # each burst drains, and the worker is back to waiting for the next
            time.sleep(0.3)
            # A file that does not exist: the job's body returns at once ("missing").
            job_ids = [task_queue.enqueue(task_queue.ANONYMIZE_FILE, str(uuid.uuid4())) for _ in range(3)]
            deadline = time.monotonic() + 5
            while DBTaskResult.objects.filter(pk__in=job_ids, status="SUCCESSFUL").count() < 3:
                assert time.monotonic() < deadline, "the idle worker did not take the queued jobs"
                time.sleep(0.02)
            assert thread.is_alive()
    finally:
        worker.running = False
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert set(DBTaskResult.objects.values_list("status", flat=True)) == {"SUCCESSFUL"}


@pytest.mark.django_db
def test_a_worker_whose_loop_raised_goes_on_waiting_when_run_again(monkeypatch):
    # The database went away under the loop (SurvivingWorker catches this and calls run() again):
    # the worker must not come back in batch mode and return at its first empty look.
    worker = make_worker(worker_class=task_queue.QueueWorker, worker_id="outage-worker", batch=False)
    looks = iter([OperationalError("the database is away"), False])

    def job_ready() -> bool:
        look = next(looks)
        if isinstance(look, Exception):
            raise look
        return look

    def sleep(seconds: float) -> None:
        worker.running = False

    monkeypatch.setattr(worker, "_job_ready", job_ready)
    monkeypatch.setattr(task_queue.time, "sleep", sleep)
    with pytest.raises(OperationalError):
        worker.run()
    assert worker.batch is False
    worker.run()  # waits (sleeps) after its empty look instead of returning at once
    assert worker.running is False
