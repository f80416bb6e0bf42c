"""Running queued jobs inside a test."""

from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult


def run_worker() -> None:
    """Run every ready job through django-tasks-db's own worker code, in this test's transaction.

    (The worker's loop closes connections between polls, which would end the test transaction;
    the claim-and-run steps are the same.)
    """
    worker = Worker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="test-worker",
        excluded_queue_names=[],
    )
    while (job := DBTaskResult.objects.ready().get_locked()) is not None:
        job.claim(worker.worker_id)
        worker.run_task(job)
