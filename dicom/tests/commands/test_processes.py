"""Real processes on the test database: a bulk run killed and resumed, workers killed and sharing a queue.

The rows these tests create must be committed for the subprocesses to see them, hence
``transaction=True``. Jobs are made slow with ``DICOM_TEST_JOB_DELAY_MS`` so that a kill lands
in the middle of the work deterministically.
"""

import io
import signal
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import call_command
from django_tasks_db.models import DBTaskResult
from pydicom import dcmread

from audit.models import AuditLog
from audit.services import Actor
from dicom.models import BulkItem, DicomFile
from dicom.services.anonymization import request_anonymization
from dicom.services.deid import DeidOptions
from dicom.tests.commands.conftest import stored_dicom_keys, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WORKER = ("db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.1")


def test_a_bulk_run_killed_midway_resumes_with_every_file_done_once(dicom_tree, processes, storage_root):
    tree = dicom_tree(30, non_dicom=2)
    args = ("anonymize_bulk", "--from-dir", str(tree), "--batch-size", "2")
    first = processes.start(*args, env={"DICOM_TEST_JOB_DELAY_MS": "150"})
    assert wait_for(lambda: BulkItem.objects.filter(status=BulkItem.Status.DONE).count() >= 4, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    done_at_kill = BulkItem.objects.filter(status=BulkItem.Status.DONE).count()
    assert 4 <= done_at_kill < 30, "the kill must land in the middle of the run"

    out = io.StringIO()
    call_command(*args, stdout=out)
    assert f"{done_at_kill} already done" in out.getvalue()
    assert BulkItem.objects.filter(status=BulkItem.Status.DONE).count() == 30
    outputs = DicomFile.objects.filter(anonymized=True)
    assert outputs.count() == 30
    # One stored object per output, no orphan from the killed run, no duplicate.
    keys = stored_dicom_keys(storage_root)
    assert len(keys) == 30
    assert {str(key.relative_to(storage_root)) for key in keys} == set(
        outputs.values_list("storage_key", flat=True)
    )
    per_file = Counter(AuditLog.objects.filter(file_id__isnull=False).values_list("file_id", flat=True))
    assert len(per_file) == 30 and set(per_file.values()) == {1}
    sops = [dcmread(key, stop_before_pixels=True).SOPInstanceUID for key in keys]
    assert len(set(sops)) == 30


def test_enqueue_hands_the_work_to_db_workers_and_follows_them(dicom_tree, processes, tmp_path):
    tree = dicom_tree(12, non_dicom=1)
    out_dir = tmp_path / "out"
    workers = [processes.start(*WORKER, "--worker-id", f"w{n}") for n in range(2)]

    out = io.StringIO()
    call_command(
        "anonymize_bulk",
        "--from-dir",
        str(tree),
        "--output-dir",
        str(out_dir),
        "--enqueue",
        "--chunk-size",
        "3",
        "--poll-interval",
        "0.2",
        stdout=out,
    )
    assert "12 done" in out.getvalue() and "1 not DICOM" in out.getvalue()
    assert len([p for p in out_dir.rglob("*.dcm") if ".partial" not in p.parts]) == 12
    jobs = DBTaskResult.objects.filter(task_path__endswith="anonymize_bulk_items_task")
    assert jobs.count() == 4
    assert {job.status for job in jobs} == {"SUCCESSFUL"}
    assert all(len(job.worker_ids) == 1 for job in jobs)
    assert AuditLog.objects.filter(file_id__isnull=False).count() == 12
    assert all(worker.poll() is None for worker in workers)


def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_once(
    user, store_original, processes, storage_root
):
    original = store_original(user)
    derived = request_anonymization(actor=Actor(user=user), source=original, options=DeidOptions())
    job = DBTaskResult.objects.get()

    doomed = processes.start(*WORKER, "--worker-id", "doomed", env={"DICOM_TEST_JOB_DELAY_MS": "60000"})
    assert wait_for(lambda: DBTaskResult.objects.get(pk=job.pk).status == "RUNNING", timeout=30)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    assert DBTaskResult.objects.get(pk=job.pk).status == "RUNNING"

    processes.start(*WORKER, "--worker-id", "rescuer")
    assert wait_for(lambda: DBTaskResult.objects.get(pk=job.pk).status == "SUCCESSFUL", timeout=60)

    job.refresh_from_db()
    derived.refresh_from_db()
    assert job.worker_ids == ["doomed", "rescuer"]
    assert derived.status == DicomFile.Status.COMPLETED
    assert AuditLog.objects.filter(file_id=derived.id, action=AuditLog.Action.JOB, success=True).count() == 1
    # The original and one output: nothing orphaned, nothing twice.
    assert sorted(stored_dicom_keys(storage_root)) == sorted(
        storage_root / key for key in (original.storage_key, derived.storage_key)
    )


def test_two_workers_share_a_queue_and_run_every_job_exactly_once(user, store_original, processes):
    actor = Actor(user=user)
    originals = [store_original(user) for _ in range(24)]
    derived = [request_anonymization(actor=actor, source=o, options=DeidOptions()) for o in originals]

    workers = [
        processes.start(*WORKER, "--batch", "--worker-id", name, env={"DICOM_TEST_JOB_DELAY_MS": "100"})
        for name in ("left", "right")
    ]
    for worker in workers:
        worker.wait(timeout=120)
        assert worker.returncode == 0, processes.output(worker)

    assert set(DicomFile.objects.filter(pk__in=[d.id for d in derived]).values_list("status", flat=True)) == {
        DicomFile.Status.COMPLETED
    }
    runs = Counter(
        AuditLog.objects.filter(action=AuditLog.Action.JOB, success=True).values_list("file_id", flat=True)
    )
    assert set(runs) == {d.id for d in derived} and set(runs.values()) == {1}
    jobs = list(DBTaskResult.objects.all())
    assert {job.status for job in jobs} == {"SUCCESSFUL"}
    assert all(len(job.worker_ids) == 1 for job in jobs)
    assert {job.worker_ids[0] for job in jobs} == {"left", "right"}


def test_worker_processes_of_a_killed_run_leave_and_the_rerun_finishes(dicom_tree, tmp_path, processes):
    tree = dicom_tree(24)
    out_dir = tmp_path / "out"
    args = ("anonymize_bulk", "--from-dir", str(tree), "--output-dir", str(out_dir), "--workers", "2")
    run = processes.start(*args, "--batch-size", "2", env={"DICOM_TEST_JOB_DELAY_MS": "200"})
    assert wait_for(lambda: BulkItem.objects.filter(status=BulkItem.Status.DONE).count() >= 2, timeout=60)
    children = [int(pid) for pid in Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()]
    assert len(children) == 2
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=10)

    call_command(*args, stdout=io.StringIO())
    outputs = [p for p in out_dir.rglob("*.dcm") if ".partial" not in p.parts]
    assert len(outputs) == 24
    assert BulkItem.objects.filter(status=BulkItem.Status.DONE).count() == 24
    assert AuditLog.objects.filter(file_id__isnull=False).count() == 24
