"""Background jobs, run by ``python manage.py db_worker``. Arguments are JSON (file ids as text)."""

from django_tasks import task

from dicom.services.anonymization import run_anonymization


@task()
def anonymize_file_task(file_id: str) -> str:
    """De-identify the source of the ``processing`` file ``file_id``; see ``run_anonymization``."""
    return run_anonymization(file_id=file_id)
