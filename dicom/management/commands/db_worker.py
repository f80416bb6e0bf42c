"""django-tasks-db's ``db_worker``, with a heartbeat, the reaper of abandoned jobs and bounded retries.

The dicom app is listed before django_tasks_db in INSTALLED_APPS, so ``manage.py db_worker`` runs
this command. Everything else (claiming with ``select_for_update(skip_locked=True)``, the options,
signals) is django-tasks-db's own worker, reached through ``dicom.services.task_queue``.
"""

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from audit.services import flush_tallies
from dicom.services import jobs, storage, task_queue

logger = logging.getLogger(__name__)


class SurvivingWorker(task_queue.QueueWorker):
    """A worker that beats while it lives and takes back the jobs of workers that died.

    The heartbeat thread also runs the reaper (and the staging sweep and the flush of refusal
    tallies), so abandoned jobs are taken back whether this
    worker is idle or busy with a long job. A job that raised is queued again with a delay until
    ``DICOM_JOB_MAX_ATTEMPTS``, then given up with its reason.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stop = threading.Event()

    def run(self) -> None:
        # Jobs still RUNNING under this id belong to an earlier process with the same id, which
        # is gone (ids are unique per live worker): take them back before beating.
        jobs.reap_abandoned_jobs(dead_worker_ids=(self.worker_id,))
        jobs.beat(worker_id=self.worker_id)
        beater = threading.Thread(target=self._beat, name="dicom-heartbeat", daemon=True)
        beater.start()
        try:
            super().run()
        finally:
            self._stop.set()
            beater.join(timeout=settings.DICOM_WORKER_HEARTBEAT_SECONDS + 5)
            jobs.forget_worker(worker_id=self.worker_id)

    def _beat(self) -> None:
        while not self._stop.wait(settings.DICOM_WORKER_HEARTBEAT_SECONDS):
            try:
                close_old_connections()
                jobs.beat(worker_id=self.worker_id)
                jobs.reap_abandoned_jobs()
                storage.sweep_staging(older_than_seconds=settings.DICOM_STAGING_MAX_AGE_SECONDS)
                # Refusal tallies of minutes that are over reach the trail even when no request comes.
                flush_tallies()
            except Exception:
                # A database hiccup must not kill the heartbeat; the next beat tries again.
                logger.exception("worker %s: heartbeat failed", self.worker_id)
        connection.close()

    def job_failed(self, job: task_queue.Job) -> None:
        jobs.retry_or_give_up(job)


class Command(task_queue.WorkerCommand):
    help = "Run a database background worker (with heartbeats, recovery of abandoned jobs and retries)"
    worker_class = SurvivingWorker
