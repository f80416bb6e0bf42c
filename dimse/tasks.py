"""Background jobs of the DIMSE app, run by ``manage.py db_worker``; enqueued by task path
(``dimse.forwarding.FORWARD_TRANSFER``). Imported by ``DimseConfig.ready`` in every process, so
the give-up handler of the forwarding jobs is known before the first reap."""

from django_tasks import task

from dimse.forwarding import run_transfer


@task()
def forward_transfer_task(transfer_id: int) -> str:
    """Send the file of the queued transfer ``transfer_id``; see ``run_transfer``."""
    return run_transfer(transfer_id=transfer_id)
