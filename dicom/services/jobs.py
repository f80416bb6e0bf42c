"""Jobs that survive their workers: heartbeats, the reaper of abandoned jobs, bounded retries.

django-tasks-db claims a job by locking its row (``select_for_update(skip_locked=True)``) and
marking it RUNNING, so two workers never take the same READY job. It does not notice a worker
that died while a job was RUNNING: the job would stay RUNNING for ever. Here every worker
refreshes a ``WorkerHeartbeat`` row while it lives (a thread, so a long job keeps it fresh), and
``reap_abandoned_jobs`` hands the RUNNING jobs of workers not seen for
``DICOM_WORKER_STALE_SECONDS`` back to the queue, or gives them up once they were tried
``DICOM_JOB_MAX_ATTEMPTS`` times. A job's attempts are the workers that claimed it
(``worker_ids``), so a crash and an exception both count.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from dicom.models import WorkerHeartbeat

logger = logging.getLogger(__name__)

READY, RUNNING, FAILED = "READY", "RUNNING", "FAILED"


class JobAbandonedError(Exception):
    """Recorded as the error of a job given up after its workers kept dying under it."""


@dataclass
class ReapResult:
    requeued: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)


def beat(*, worker_id: str, now: datetime | None = None) -> None:
    """Record that ``worker_id`` is alive (one upsert)."""
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={"last_seen": now or timezone.now()},
        create_defaults={
            "last_seen": now or timezone.now(),
            "hostname": socket.gethostname()[:255],
            "pid": os.getpid(),
        },
    )


def forget_worker(*, worker_id: str) -> None:
    """A worker that stops cleanly removes its heartbeat (it holds no running job then)."""
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()


def gave_up_detail(attempts: int) -> str:
    return f"gave up after {attempts} attempts"


def reap_abandoned_jobs(*, now: datetime | None = None, dead_worker_ids: tuple[str, ...] = ()) -> ReapResult:
    """Take back the RUNNING jobs whose worker is gone; return which were requeued or given up.

    A worker is gone when its heartbeat is older than ``DICOM_WORKER_STALE_SECONDS``, when it has
    no heartbeat and the job started longer ago than that, or when it is named in
    ``dead_worker_ids`` (a worker restarted under the same id reclaims its own jobs). Runs in one
    transaction; ``skip_locked`` lets several reapers run at once without taking a job twice.
    A job under the attempt limit goes back to READY; one at the limit ends FAILED, and what it
    was working on is marked failed with "gave up after N attempts".
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.DICOM_WORKER_STALE_SECONDS)
    result = ReapResult()
    with transaction.atomic():
        running = list(DBTaskResult.objects.filter(status=RUNNING).select_for_update(skip_locked=True))
        if not running:
            return result
        last_workers = {task.worker_ids[-1] for task in running if task.worker_ids}
        seen = dict(
            WorkerHeartbeat.objects.filter(worker_id__in=last_workers).values_list("worker_id", "last_seen")
        )
        for task in running:
            worker = task.worker_ids[-1] if task.worker_ids else None
            if worker in dead_worker_ids:
                pass
            elif worker in seen:
                if seen[worker] >= stale_before:
                    continue
            elif task.started_at is not None and task.started_at >= stale_before:
                continue
            attempts = len(task.worker_ids)
            if attempts >= settings.DICOM_JOB_MAX_ATTEMPTS:
                detail = f"{gave_up_detail(attempts)}: its worker stopped during each"
                _fail_task(task, detail, now=now)
                give_up(task, detail)
                result.gave_up.append(str(task.pk))
            else:
                task.status, task.started_at = READY, None
                task.save(update_fields=["status", "started_at"])
                result.requeued.append(str(task.pk))
    for task_id in result.requeued:
        logger.warning("job %s: its worker stopped; queued again", task_id)
    for task_id in result.gave_up:
        logger.warning("job %s: its worker stopped too often; given up", task_id)
    return result


def retry_or_give_up(task: DBTaskResult, *, now: datetime | None = None) -> bool:
    """After ``task`` raised: queue it again with a delay, or give it up at the attempt limit.

    Returns True when it was queued again. The error and traceback of the last attempt stay on
    the row for the admin either way.
    """
    now = now or timezone.now()
    attempts = len(task.worker_ids)
    if attempts < settings.DICOM_JOB_MAX_ATTEMPTS:
        delay = timedelta(seconds=settings.DICOM_JOB_RETRY_DELAY_SECONDS * attempts)
        DBTaskResult.objects.filter(pk=task.pk, status=FAILED).update(
            status=READY, run_after=now + delay, started_at=None, finished_at=None
        )
        logger.warning("job %s raised (attempt %s); tried again in %s", task.pk, attempts, delay)
        return True
    error = task.exception_class_path.rsplit(".", 1)[-1] or "error"
    give_up(task, f"{gave_up_detail(attempts)}: {error}")
    return False


def give_up(task: DBTaskResult, detail: str) -> None:
    """Mark what ``task`` was working on as failed with ``detail`` (a PHI-free text)."""
    from dicom import tasks
    from dicom.services.anonymization import give_up_anonymization
    from dicom.services.bulk import give_up_items

    args = task.args_kwargs.get("args", [])
    if task.task_path == tasks.anonymize_file_task.module_path and args:
        give_up_anonymization(file_id=args[0], detail=detail)
    elif task.task_path == tasks.anonymize_bulk_items_task.module_path and len(args) == 2:
        give_up_items(run_id=args[0], item_ids=args[1], detail=detail)


def _fail_task(task: DBTaskResult, detail: str, *, now: datetime) -> None:
    task.status = FAILED
    task.finished_at = now
    task.exception_class_path = f"{JobAbandonedError.__module__}.{JobAbandonedError.__qualname__}"
    task.traceback = f"{JobAbandonedError.__name__}: {detail}"
    task.return_value = None
    task.save(update_fields=["status", "finished_at", "exception_class_path", "traceback", "return_value"])
