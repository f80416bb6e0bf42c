"""The job queue: enqueueing by task path, give-up handlers, and every use of django-tasks-db's internals.

Services enqueue through :func:`enqueue` by task path, so they never import ``dicom.tasks`` (which
imports the services whose functions are the job bodies). Each job body module registers with
:func:`register_give_up` how to give up its work when its job is abandoned, so the reaper
(``dicom.services.jobs``) does not import the job bodies either. This module imports no service.

Written against django-tasks-db 0.13.0 (django-tasks 0.12.0). Beyond the public ``Task.enqueue``,
it relies on these internals, to be checked on every upgrade:

- the ``DBTaskResult`` model (``django_tasks_db.models``) and its fields ``status`` (``READY``,
  ``RUNNING``, ``FAILED``, ...), ``worker_ids`` (the ids of the workers that claimed the job, one
  per claim, appended by ``DBTaskResult.claim``), ``started_at``, ``finished_at``, ``run_after``,
  ``args_kwargs`` (``{"args": [...], "kwargs": {...}}``), ``task_path``, ``exception_class_path``
  (``module.QualName`` of what the job raised), ``traceback`` and ``return_value``;
- that its worker claims a READY job whose ``run_after`` has passed with
  ``select_for_update(skip_locked=True)``, so a job set back to READY is simply taken again;
  ``DBTaskResult.objects.ready()`` and the worker's filters (``backend_name``, ``queue_names``,
  ``process_all_queues``, ``excluded_queue_names``), and that its loop in batch mode (``batch``)
  returns once no job is ready, counting what it ran in ``_run_tasks`` against ``max_tasks``;
- ``django_tasks_db.management.commands.db_worker``: its ``logger`` and the text of its start and
  batch-end lines; its ``Worker`` (constructor keywords,
  ``worker_id``, ``run()``, and ``run_task(db_task_result)``, which leaves the row FAILED when the
  task raised), and its ``Command``, whose ``handle`` builds the worker from the module-level
  name ``Worker`` and whose ``--interval`` option is the wait between looks at an empty queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Exists, OuterRef
from django.utils.module_loading import import_string
from django_tasks_db.management.commands import db_worker
from django_tasks_db.models import DBTaskResult

READY, RUNNING, FAILED = "READY", "RUNNING", "FAILED"

# One line per job run (task path, job id, status, duration): JSON in production.
job_logger = logging.getLogger("dicom.jobs")

# The jobs of the dicom app, by the path of their task in ``dicom.tasks``.
ANONYMIZE_FILE = "dicom.tasks.anonymize_file_task"
ANONYMIZE_FILES = "dicom.tasks.anonymize_files_task"
ANONYMIZE_BULK_ITEMS = "dicom.tasks.anonymize_bulk_items_task"

GiveUpHandler = Callable[[list, str], None]
_give_up_handlers: dict[str, GiveUpHandler] = {}


@dataclass(frozen=True)
class Job:
    """What the reaper and the retry policy need to know of one job row (plain values)."""

    id: str
    task_path: str
    args: list
    worker_ids: tuple[str, ...]
    started_at: datetime | None
    exception_class_path: str = ""

    @property
    def attempts(self) -> int:
        """How often the job was claimed: a crash and an exception both count."""
        return len(self.worker_ids)

    @property
    def last_worker(self) -> str | None:
        return self.worker_ids[-1] if self.worker_ids else None

    @property
    def error_name(self) -> str:
        """The class name of what the job last raised, or ``"error"`` when none is recorded."""
        return self.exception_class_path.rsplit(".", 1)[-1] or "error"


def _job(row: DBTaskResult) -> Job:
    return Job(
        id=str(row.pk),
        task_path=row.task_path,
        args=list(row.args_kwargs.get("args", [])),
        worker_ids=tuple(row.worker_ids),
        started_at=row.started_at,
        exception_class_path=row.exception_class_path,
    )


# --- enqueueing and giving up ---------------------------------------------------------------


def enqueue(task_path: str, *args: object) -> str:
    """Enqueue the task at ``task_path`` with JSON ``args``; return the job's id.

    The job row is written in the caller's transaction (the queue lives in the same database), so
    the job exists if and only if the caller's writes commit.
    """
    return str(import_string(task_path).enqueue(*args).id)


def register_give_up(task_path: str, handler: GiveUpHandler) -> None:
    """Say how to give up the work of jobs of ``task_path``: ``handler(args, detail)``.

    Called by each job body module at import; ``DicomConfig.ready`` imports ``dicom.tasks``, and
    with it every job body, so every process knows every handler before its first reap.
    """
    _give_up_handlers[task_path] = handler


def give_up_handler(task_path: str) -> GiveUpHandler | None:
    return _give_up_handlers.get(task_path)


# --- job rows -------------------------------------------------------------------------------


def locked_running_jobs() -> list[Job]:
    """The RUNNING jobs, their rows locked (``skip_locked``): call inside ``transaction.atomic``."""
    return [
        _job(row) for row in DBTaskResult.objects.filter(status=RUNNING).select_for_update(skip_locked=True)
    ]


def requeue(job_id: str) -> None:
    """Put a job back to READY, to be claimed again at once."""
    DBTaskResult.objects.filter(pk=job_id).update(status=READY, started_at=None)


def retry_later(job_id: str, *, run_after: datetime) -> None:
    """Put a FAILED job back to READY, to be claimed again once ``run_after`` has passed."""
    DBTaskResult.objects.filter(pk=job_id, status=FAILED).update(
        status=READY, run_after=run_after, started_at=None, finished_at=None
    )


def mark_failed(job_id: str, *, error: type[BaseException], detail: str, now: datetime) -> None:
    """End a job FAILED as if it had raised ``error(detail)`` (for a job no worker finished)."""
    DBTaskResult.objects.filter(pk=job_id).update(
        status=FAILED,
        finished_at=now,
        exception_class_path=f"{error.__module__}.{error.__qualname__}",
        traceback=f"{error.__name__}: {detail}",
        return_value=None,
    )


def live_job(job_id: OuterRef) -> Exists:
    """True (in a query) while the job ``job_id`` refers to is READY or RUNNING."""
    return Exists(DBTaskResult.objects.filter(pk=job_id, status__in=[READY, RUNNING]))


def check_reachable() -> None:
    """Query the job table once (readiness); raises the database's error when it cannot be read."""
    DBTaskResult.objects.exists()


# --- the worker -----------------------------------------------------------------------------


class QueueWorker(db_worker.Worker):
    """django-tasks-db's worker, waiting for work without locks, telling :meth:`job_failed` about
    every job that raised.

    django-tasks-db looks for a job inside a write transaction (``select_for_update``), and on
    SQLite every transaction of the service takes the database's write lock at BEGIN: at one look
    every 100 ms an idle worker held the lock often enough to slow single-client uploads by a fifth.
    Here an idle worker looks with a plain read (no lock, no transaction) and enters
    django-tasks-db's loop, in its batch mode, only when a job is ready; that loop claims and runs
    jobs until the queue is empty, then hands back.
    """

    def run(self) -> None:
        batch, self.batch = self.batch, True
        quiet = _LoopLines()
        db_worker.logger.addFilter(quiet)
        try:
            while self.running:
                close_old_connections()
                if self._job_ready():
                    super().run()
                    quiet.started = True
                    self.startup_delay = False  # its random delay is for the worker's start only
                    if self.max_tasks is not None and self._run_tasks >= self.max_tasks:
                        return
                elif batch:
                    return
                else:
                    time.sleep(self.interval)
        finally:
            # Restored however the loop ends: a database error raised out of it (which the
            # caller may survive and call run() again) must not leave the worker in batch mode,
            # where it would return, and the process exit, at the first empty look.
            self.batch = batch
            db_worker.logger.removeFilter(quiet)

    def _job_ready(self) -> bool:
        # The jobs django-tasks-db's loop would look for (its filters, as in Worker.run).
        jobs = DBTaskResult.objects.ready().filter(backend_name=self.backend_name)
        if not self.process_all_queues:
            jobs = jobs.filter(queue_name__in=self.queue_names)
        if self.excluded_queue_names:
            jobs = jobs.exclude(queue_name__in=self.excluded_queue_names)
        return jobs.exists()

    def run_task(self, db_task_result: DBTaskResult) -> None:
        started = time.monotonic()
        super().run_task(db_task_result)
        _log_job_run(db_task_result, worker_id=self.worker_id, duration=time.monotonic() - started)
        if db_task_result.status == FAILED:
            self.job_failed(_job(db_task_result))

    def job_failed(self, job: Job) -> None:
        """Called after ``job`` raised and was marked FAILED; the default does nothing."""


class _LoopLines(logging.Filter):
    """Drops the lines django-tasks-db writes each time its loop is entered and left here: its
    "Starting worker" (but the first) and its batch mode's "No more tasks ... exiting"."""

    started = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("No more tasks to run"):
            return False
        return not (self.started and message.startswith("Starting worker"))


def _log_job_run(row: DBTaskResult, *, worker_id: str, duration: float) -> None:
    """The job's line: what ran, how it ended and how long it took; never its arguments or result.

    A failed job names the class of what it raised, not its message (a pydicom message can quote a
    value from the file).
    """
    fields = {
        "task": row.task_path,
        "job_id": str(row.pk),
        "status": row.status.lower(),
        "duration_ms": round(duration * 1000, 1),
        "worker_id": worker_id,
        "attempt": len(row.worker_ids),
    }
    if row.status == FAILED:
        fields["error"] = row.exception_class_path.rsplit(".", 1)[-1] or "error"
    job_logger.info(
        "job %s %s %s in %.1f ms (attempt %s)",
        fields["job_id"],
        fields["task"],
        fields["status"],
        fields["duration_ms"],
        fields["attempt"],
        extra={"fields": fields},
    )


class WorkerCommand(db_worker.Command):
    """django-tasks-db's ``db_worker`` command (same options), running ``worker_class``."""

    worker_class: type[QueueWorker] = QueueWorker

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        # django-tasks-db waits 1 s between looks at an empty queue: a job queued just after one
        # waited that long before it started. A look is one indexed query.
        parser.set_defaults(interval=settings.DICOM_WORKER_POLL_MS / 1000)

    def handle(self, *args, **options) -> None:
        # The parent builds its worker by the module-level name; point it at ours for this call.
        original = db_worker.Worker
        db_worker.Worker = self.worker_class
        try:
            super().handle(*args, **options)
        finally:
            db_worker.Worker = original
