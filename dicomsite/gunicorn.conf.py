"""Settings of the gunicorn server that scripts/run.sh and docker-compose.yml start.

gunicorn's master supervises uvicorn workers (``dicomsite.server.Worker``) running Django's ASGI
application (``dicomsite.asgi``): it restarts a worker that dies and sweeps what it staged.

The access log has no query strings and no Referer: an admin search (``?q=<patient ID>``) or a
filtered list would otherwise write what someone typed into every line of the log. The line is
written by the request-log middleware, ``dicomsite.logs`` (uvicorn's own access log is off).
"""

worker_class = "dicomsite.server.Worker"
control_socket_disable = True
# Ctrl-C and deploys: requests in flight get this long to finish.
graceful_timeout = 10


def child_exit(server, worker) -> None:
    """A web worker exited (killed, crashed, or recycled): remove the staging files it left.

    A worker killed mid-upload leaves a partial original with patient data; the master knows it is
    dead the moment it exits, so its files go now rather than at the next age-based sweep. Runs in
    the master, which sets Django up here once (it does not load the application itself).
    """
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomsite.settings")
    django.setup()
    from dicom.services.storage import sweep_staging_of_process

    try:
        sweep_staging_of_process(pid=worker.pid)
    except OSError:
        server.log.exception("could not sweep the staging files of worker %s", worker.pid)
