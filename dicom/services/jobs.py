"""Jobs that survive their workers: heartbeats, the reaper of abandoned jobs, bounded retries.

django-tasks-db claims a job by locking its row (``select_for_update(skip_locked=True)``) and
marking it RUNNING, so two workers never take the same READY job. It does not notice a worker
that died while a job was RUNNING: the job would stay RUNNING for ever. Here every worker
refreshes a ``WorkerHeartbeat`` row while it lives (a thread, so a long job keeps it fresh), and
``reap_abandoned_jobs`` hands the RUNNING jobs of workers not seen for
``DICOM_WORKER_STALE_SECONDS`` back to the queue, or gives them up once they were tried
``DICOM_JOB_MAX_ATTEMPTS`` times. A job's attempts are the workers that claimed it
(``worker_ids``), so a crash and an exception both count. The job rows are read and written
through ``dicom.services.task_queue``, the one module that knows django-tasks-db's internals.
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

from dicom.models import WorkerHeartbeat
from dicom.services import task_queue

logger = logging.getLogger(__name__)


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


def last_heartbeat(*, hostname: str) -> datetime | None:
    """When a worker on ``hostname`` last beat (the newest of its rows), or None if none did."""
    return (
        WorkerHeartbeat.objects.filter(hostname=hostname[:255])
        .order_by("-last_seen")
        .values_list("last_seen", flat=True)
        .first()
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
        running = task_queue.locked_running_jobs()
        if not running:
            return result
        last_workers = {job.last_worker for job in running if job.last_worker}
        seen = dict(
            WorkerHeartbeat.objects.filter(worker_id__in=last_workers).values_list("worker_id", "last_seen")
        )
        for job in running:
            worker = job.last_worker
            if worker in dead_worker_ids:
                pass
            elif worker in seen:
                if seen[worker] >= stale_before:
                    continue
            elif job.started_at is not None and job.started_at >= stale_before:
                continue
            if job.attempts >= settings.DICOM_JOB_MAX_ATTEMPTS:
                detail = f"{gave_up_detail(job.attempts)}: its worker stopped during each"
                task_queue.mark_failed(job.id, error=JobAbandonedError, detail=detail, now=now)
                give_up(job, detail)
                result.gave_up.append(job.id)
            else:
                task_queue.requeue(job.id)
                result.requeued.append(job.id)
    for task_id in result.requeued:
        logger.warning("job %s: its worker stopped; queued again", task_id)
    for task_id in result.gave_up:
        logger.warning("job %s: its worker stopped too often; given up", task_id)
    return result


def retry_or_give_up(job: task_queue.Job, *, now: datetime | None = None) -> bool:
    """After ``job`` raised: queue it again with a delay, or give it up at the attempt limit.

    Returns True when it was queued again. The error and traceback of the last attempt stay on
    the row for the admin either way.
    """
    now = now or timezone.now()
    if job.attempts < settings.DICOM_JOB_MAX_ATTEMPTS:
        delay = timedelta(seconds=settings.DICOM_JOB_RETRY_DELAY_SECONDS * job.attempts)
        task_queue.retry_later(job.id, run_after=now + delay)
        logger.warning("job %s raised (attempt %s); tried again in %s", job.id, job.attempts, delay)
        return True
    give_up(job, f"{gave_up_detail(job.attempts)}: {job.error_name}")
    return False


def give_up(job: task_queue.Job, detail: str) -> None:
    """Mark what ``job`` was working on as failed with ``detail`` (a PHI-free text).

    The job body module registered how (``task_queue.register_give_up``); a job of a task with no
    handler has nothing of ours to mark.
    """
    handler = task_queue.give_up_handler(job.task_path)
    if handler is not None:
        handler(job.args, detail)
