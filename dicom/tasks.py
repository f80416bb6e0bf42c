"""Background jobs, run by ``python manage.py db_worker``. Arguments are JSON (file ids as text).

Every job is idempotent (see the services they call), so a job taken up again after its worker
died, or tried again after it raised, ends with one output.

Only the worker side imports this module: services enqueue by task path
(``dicom.services.task_queue``), whose constants name these functions.
"""

from django_tasks import task

from dicom.services.anonymization import run_anonymization, run_anonymizations
from dicom.services.bulk import run_items_job


@task()
def anonymize_file_task(file_id: str) -> str:
    """De-identify the source of the ``processing`` file ``file_id``; see ``run_anonymization``."""
    return run_anonymization(file_id=file_id)


@task()
def anonymize_files_task(file_ids: list[str]) -> dict:
    """De-identify the sources of the ``processing`` files ``file_ids`` (one request's batch)."""
    return run_anonymizations(file_ids=file_ids)


@task()
def anonymize_bulk_items_task(run_id: str, item_ids: list[int]) -> dict:
    """Do the unfinished items ``item_ids`` of bulk run ``run_id``; see ``run_items_job``."""
    return run_items_job(run_id=run_id, item_ids=item_ids)
