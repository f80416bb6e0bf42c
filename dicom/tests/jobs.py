"""Running queued jobs inside a test."""

from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult


def make_worker(*, worker_class: type[Worker] = Worker, worker_id: str = "test-worker", **options) -> Worker:
    """A worker of ``worker_class`` on the default queue; ``options`` override its constructor's
    keywords (by default: no wait between looks, batch mode, no start-up delay)."""
    keywords = {
        "queue_names": ["default"],
        "interval": 0,
        "batch": True,
        "backend_name": "default",
        "startup_delay": False,
        "max_tasks": None,
        "worker_id": worker_id,
        "excluded_queue_names": [],
        **options,
    }
    return worker_class(**keywords)


def run_worker(*, worker_class: type[Worker] = Worker, worker_id: str = "test-worker") -> None:
    """Run every ready job through a worker's own code (django-tasks-db's by default), in this test's transaction.

    (The worker's loop closes connections between polls, which would end the test transaction;
    the claim-and-run steps are the same.) ``worker_class`` is another worker's class to run them
    with, e.g. the project's ``task_queue.QueueWorker``, which writes a log line per job.
    """
    worker = make_worker(worker_class=worker_class, worker_id=worker_id)
    while (job := DBTaskResult.objects.ready().get_locked()) is not None:
        job.claim(worker.worker_id)
        worker.run_task(job)
