"""The bulk service: plans and fingerprints, recording outcomes once, reclaiming orphaned items,
engine bugs tried again and refusals final."""

import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from pydicom import dcmread

from audit.models import AuditLog
from audit.services import Actor
from dicom.models import BulkItem, BulkRun, DicomFile
from dicom.services import bulk
from dicom.services.deid import DeidOptions, engine
from dicom.services.errors import DeidentificationRefusedError, DicomServiceError, InvalidDicomError
from dicom.tests.commands.conftest import write_instance

pytestmark = pytest.mark.django_db


def test_the_fingerprint_names_the_selection_and_options_not_their_order(tmp_path):
    one = bulk.BulkPlan(options=DeidOptions.from_names(["retain_uids", "clean_graphics"]), directory=tmp_path)
    same = bulk.BulkPlan(
        options=DeidOptions.from_names(["clean_graphics", "retain_uids"]), directory=tmp_path / "."
    )
    other_options = bulk.BulkPlan(options=DeidOptions.from_names(["retain_uids"]), directory=tmp_path)
    other_output = bulk.BulkPlan(options=one.options, directory=tmp_path, output_dir=tmp_path / "out")
    stored = bulk.BulkPlan(options=one.options, selection=bulk.StoredSelection(file_ids=("b", "a")))
    stored_same = bulk.BulkPlan(options=one.options, selection=bulk.StoredSelection(file_ids=("a", "b")))
    assert one.fingerprint == same.fingerprint
    assert (
        len({one.fingerprint, other_options.fingerprint, other_output.fingerprint, stored.fingerprint}) == 4
    )
    assert stored.fingerprint == stored_same.fingerprint


def test_the_system_account_is_created_once_inactive_without_a_password(settings):
    settings.DICOM_SYSTEM_USERNAME = "robot"
    first = bulk.operator_account(username=None)
    again = bulk.operator_account(username=None)
    assert first.pk == again.pk and first.username == "robot"
    assert not first.is_active and not first.has_usable_password()


def test_an_outcome_is_recorded_once_even_when_reported_twice(user, tmp_path, storage_root):
    source = write_instance(tmp_path / "in.dcm", 7)
    plan = bulk.BulkPlan(options=DeidOptions(), directory=tmp_path)
    run = bulk.prepare_run(plan=plan, operator=user)
    item = run.items.get(source_path=str(source.resolve()))
    (outcome,) = bulk.process_units(bulk.work_spec(run), list(bulk.work_units([item])))
    assert outcome.status == BulkItem.Status.DONE

    actor = Actor(user=user)
    assert bulk.record_outcomes(run=run, actor=actor, outcomes=[outcome]) == 1
    assert bulk.record_outcomes(run=run, actor=actor, outcomes=[outcome]) == 0
    assert DicomFile.objects.filter(pk=item.output_id, anonymized=True).count() == 1
    assert AuditLog.objects.filter(file_id=item.output_id).count() == 1
    # Doing the item again writes the same key: still one stored object.
    bulk.process_units(bulk.work_spec(run), list(bulk.work_units([item])))
    assert len(list((storage_root / "dicom").rglob("*.dcm"))) == 1


def test_queued_items_without_a_live_job_are_reclaimed(tmp_path):
    run = BulkRun.objects.create(fingerprint="e" * 64, source=BulkRun.Source.DIRECTORY, selection={})
    live = DBTaskResult.objects.create(
        args_kwargs={"args": [], "kwargs": {}},
        task_path="dicom.tasks.anonymize_bulk_items_task",
        backend_name="default",
        run_after=timezone.now(),
    )
    finished = DBTaskResult.objects.create(
        args_kwargs={"args": [], "kwargs": {}},
        task_path="dicom.tasks.anonymize_bulk_items_task",
        backend_name="default",
        run_after=timezone.now(),
        status="SUCCESSFUL",
    )
    held = BulkItem.objects.create(run=run, source_path="/a", status=BulkItem.Status.QUEUED, task_id=live.pk)
    stranded = BulkItem.objects.create(
        run=run, source_path="/b", status=BulkItem.Status.QUEUED, task_id=finished.pk
    )
    lost = BulkItem.objects.create(run=run, source_path="/c", status=BulkItem.Status.QUEUED, task_id=None)

    assert bulk.reclaim_orphaned_items(run) == 2
    statuses = {i.pk: i.status for i in BulkItem.objects.all()}
    assert statuses == {
        held.pk: BulkItem.Status.QUEUED,
        stranded.pk: BulkItem.Status.PENDING,
        lost.pk: BulkItem.Status.PENDING,
    }


def test_a_uid_that_is_not_a_safe_file_name_is_refused_in_directory_mode(tmp_path):
    source = write_instance(tmp_path / "in" / "x.dcm", 3)
    dataset = dcmread(source)
    dataset.StudyInstanceUID = "1.2/../../etc"
    dataset.save_as(source)
    spec = bulk.WorkSpec(options=("retain_uids",), output_dir=str(tmp_path / "out"), study_type="general")
    unit = bulk.WorkUnit(item_id=1, output_id="00000000-0000-0000-0000-000000000001", source_path=str(source))
    outcome = bulk.process_unit(spec, unit, options=DeidOptions.from_names(spec.options), key=b"k" * 32)
    assert outcome.status == BulkItem.Status.REFUSED
    assert not list(Path(tmp_path / "out").rglob("*.dcm"))


# --- bugs are failures (tried again), input problems refusals (final) --------------------------

WORKER = ("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--interval", "0", "--max-tasks", "1")


def engine_raising(monkeypatch, error: Exception) -> None:
    """Make the engine's core (called inside deidentify_file's guard) raise ``error``."""

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine, "deidentify_dataset", broken)


def process_one(source: Path, *, item_id: int = 1) -> bulk.Outcome:
    spec = bulk.WorkSpec(options=(), output_dir=None, study_type="general")
    unit = bulk.WorkUnit(item_id=item_id, output_id=str(uuid.uuid4()), source_path=str(source))
    return bulk.process_unit(spec, unit, options=DeidOptions(), key=b"k" * 32)


@pytest.mark.parametrize(
    "error",
    [RuntimeError("bug"), KeyError("bug"), TypeError("bug"), AttributeError("bug"), ValueError("bug")],
)
def test_an_engine_bug_is_a_failure_not_a_refusal(tmp_path, monkeypatch, error):
    source = write_instance(tmp_path / "in.dcm", 11)
    engine_raising(monkeypatch, error)
    outcome = process_one(source)
    assert outcome.status == BulkItem.Status.FAILED
    assert outcome.detail == f"internal error ({type(error).__name__})"


@pytest.mark.parametrize(
    "error",
    [
        DeidentificationRefusedError("refused here"),
        InvalidDicomError("refused here"),
        DicomServiceError("refused here"),
    ],
)
def test_an_engine_refusal_stays_a_refusal(tmp_path, monkeypatch, error):
    source = write_instance(tmp_path / "in.dcm", 12)
    engine_raising(monkeypatch, error)
    outcome = process_one(source)
    assert outcome.status == BulkItem.Status.REFUSED and outcome.detail == "refused here"


@pytest.fixture
def queued_run(user, tmp_path):
    """A bulk run of two stored-to-be files, handed to the job queue as one job."""
    for index in (1, 2):
        write_instance(tmp_path / "in" / f"{index}.dcm", index)
    run = bulk.prepare_run(
        plan=bulk.BulkPlan(options=DeidOptions(), directory=tmp_path / "in"), operator=user
    )
    assert bulk.enqueue_items(run=run, chunk_size=25) == 2
    return run


def item_statuses(run: BulkRun) -> list[str]:
    return sorted(run.items.values_list("status", flat=True))


# The worker runs in-process: its heartbeat thread has its own connection, so rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_a_queued_job_hit_by_an_engine_bug_is_tried_again_and_then_completes(
    queued_run, monkeypatch, settings, storage_root
):
    settings.DICOM_JOB_RETRY_DELAY_SECONDS = 0
    engine_raising(monkeypatch, KeyError("bug"))
    call_command(*WORKER, verbosity=0)
    job = DBTaskResult.objects.get()
    assert job.status == "READY" and len(job.worker_ids) == 1
    assert job.exception_class_path == "dicom.services.bulk.BulkItemsFailedError"
    # Still held by their job, not refused, not recorded: nothing written for them yet.
    assert item_statuses(queued_run) == [BulkItem.Status.QUEUED, BulkItem.Status.QUEUED]
    assert not DicomFile.objects.filter(anonymized=True).exists()

    monkeypatch.undo()  # the bug is fixed before the next attempt
    call_command(*WORKER, verbosity=0)
    job.refresh_from_db()
    assert job.status == "SUCCESSFUL" and len(job.worker_ids) == 2
    assert item_statuses(queued_run) == [BulkItem.Status.DONE, BulkItem.Status.DONE]
    assert DicomFile.objects.filter(anonymized=True, status=DicomFile.Status.COMPLETED).count() == 2
    assert AuditLog.objects.filter(action=AuditLog.Action.BULK_ANONYMIZE, success=True).count() == 2


# The worker runs in-process: its heartbeat thread has its own connection, so rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_a_queued_job_that_keeps_hitting_an_engine_bug_is_given_up_as_failed(
    queued_run, monkeypatch, settings
):
    settings.DICOM_JOB_MAX_ATTEMPTS = 2
    settings.DICOM_JOB_RETRY_DELAY_SECONDS = 0
    engine_raising(monkeypatch, TypeError("bug"))
    call_command(*WORKER, verbosity=0)
    call_command(*WORKER, verbosity=0)
    job = DBTaskResult.objects.get()
    assert job.status == "FAILED" and len(job.worker_ids) == 2
    assert item_statuses(queued_run) == [BulkItem.Status.FAILED, BulkItem.Status.FAILED]
    details = set(queued_run.items.values_list("detail", flat=True))
    assert details == {"gave up after 2 attempts: BulkItemsFailedError"}
    # Each item given up is audited once, against its output id, with the reason.
    given_up = AuditLog.objects.filter(action=AuditLog.Action.BULK_ANONYMIZE, success=False)
    assert sorted(given_up.values_list("file_id", flat=True)) == sorted(
        queued_run.items.values_list("output_id", flat=True)
    )
    assert set(given_up.values_list("reason", flat=True)) == details
    # Failed is not final: a rerun of the command does them again.
    assert bulk.workable_items(queued_run).count() == 2


# The worker runs in-process: its heartbeat thread has its own connection, so rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_a_queued_job_whose_files_the_engine_refuses_ends_once_with_them_refused(queued_run, monkeypatch):
    engine_raising(monkeypatch, DeidentificationRefusedError("refused here"))
    call_command(*WORKER, verbosity=0)
    job = DBTaskResult.objects.get()
    assert job.status == "SUCCESSFUL" and len(job.worker_ids) == 1
    assert item_statuses(queued_run) == [BulkItem.Status.REFUSED, BulkItem.Status.REFUSED]
    assert set(queued_run.items.values_list("detail", flat=True)) == {"refused here"}
