"""The bulk service: plans and fingerprints, recording outcomes once, reclaiming orphaned items."""

from pathlib import Path

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from pydicom import dcmread

from audit.models import AuditLog
from audit.services import Actor
from dicom.models import BulkItem, BulkRun, DicomFile
from dicom.services import bulk
from dicom.services.deid import DeidOptions
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
