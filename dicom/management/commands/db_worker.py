"""django-tasks-db's ``db_worker``, with a heartbeat, the reaper of abandoned jobs and bounded retries.

The dicom app is listed before django_tasks_db in INSTALLED_APPS, so ``manage.py db_worker`` runs
this command. Everything else (claiming with ``select_for_update(skip_locked=True)``, the options,
signals) is django-tasks-db's own worker, reached through ``dicom.services.task_queue``.
"""

import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from audit.services import flush_tallies
from dicom.services import jobs, storage, task_queue
from dicom.services.orphans import sweep_orphaned_objects

logger = logging.getLogger(__name__)

ORPHAN_SWEEP_SECONDS = 600

# What the database's absence raises (refused, reset, or a connection closed under a query).
DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_RETRY_SECONDS = 1


class SurvivingWorker(task_queue.QueueWorker):
    """A worker that beats while it lives and takes back the jobs of workers that died.

    The heartbeat thread also runs the reaper (and the staging sweep and the flush of refusal
    tallies), so abandoned jobs are taken back whether this
    worker is idle or busy with a long job. A job that raised is queued again with a delay until
    ``DICOM_JOB_MAX_ATTEMPTS``, then given up with its reason. A database outage does not end the
    worker: it waits for the database, takes back the job it held, and goes on.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stop = threading.Event()

    def run(self) -> None:
        beater = threading.Thread(target=self._beat, name="dicom-heartbeat", daemon=True)
        beater.start()
        try:
            while self.running:
                try:
                    # Jobs still RUNNING under this id belong to an earlier process with the same
                    # id, which is gone (ids are unique per live worker), or to this one before
                    # the database went away under it: take them back before taking new ones.
                    jobs.reap_abandoned_jobs(dead_worker_ids=(self.worker_id,))
                    jobs.beat(worker_id=self.worker_id)
                    super().run()
                    return
                except DATABASE_ERRORS:
                    # The database is away (restarted, failed over): django-tasks-db's loop
                    # raises out of the worker. Wait for it instead of exiting, so a database
                    # outage does not leave the queue without workers until someone restarts them.
                    logger.warning(
                        "worker %s: the database is unreachable; trying again in %s s",
                        self.worker_id,
                        DATABASE_RETRY_SECONDS,
                        exc_info=True,
                    )
                    connection.close_if_unusable_or_obsolete()
                    time.sleep(DATABASE_RETRY_SECONDS)
        finally:
            self._stop.set()
            beater.join(timeout=settings.DICOM_WORKER_HEARTBEAT_SECONDS + 5)
            with contextlib.suppress(*DATABASE_ERRORS):
                jobs.forget_worker(worker_id=self.worker_id)

    def _beat(self) -> None:
        # Listing the whole store is not for every beat: objects without a row, every ten minutes.
        next_orphan_sweep = time.monotonic() + ORPHAN_SWEEP_SECONDS
        while not self._stop.wait(settings.DICOM_WORKER_HEARTBEAT_SECONDS):
            try:
                close_old_connections()
                jobs.beat(worker_id=self.worker_id)
                jobs.reap_abandoned_jobs()
                storage.sweep_staging(older_than_seconds=settings.DICOM_STAGING_MAX_AGE_SECONDS)
                # Refusal tallies of minutes that are over reach the trail even when no request comes.
                flush_tallies()
                if time.monotonic() >= next_orphan_sweep:
                    next_orphan_sweep = time.monotonic() + ORPHAN_SWEEP_SECONDS
                    sweep_orphaned_objects(older_than_seconds=settings.DICOM_STAGING_MAX_AGE_SECONDS)
            except Exception:
                # A database hiccup must not kill the heartbeat; the next beat tries again.
                logger.exception("worker %s: heartbeat failed", self.worker_id)
        connection.close()

    def job_failed(self, job: task_queue.Job) -> None:
        jobs.retry_or_give_up(job)


class Command(task_queue.WorkerCommand):
    help = "Run a database background worker (with heartbeats, recovery of abandoned jobs and retries)"
    worker_class = SurvivingWorker
