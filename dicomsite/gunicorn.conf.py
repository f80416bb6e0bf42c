"""Settings of the gunicorn server that scripts/run.sh and docker-compose.yml start.

The access log has no query strings and no Referer: an admin search (``?q=<patient ID>``) or a
filtered list would otherwise write what someone typed into every line of the log, and the
Referer carries the previous page's query string too.
"""

accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
control_socket_disable = True


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
