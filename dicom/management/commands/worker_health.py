"""The worker's health check (compose): exit 0 when a ``db_worker`` on this host beat recently.

A worker refreshes its heartbeat row every ``DICOM_WORKER_HEARTBEAT_SECONDS`` from a thread, also
during a long job; one not seen for ``DICOM_WORKER_STALE_SECONDS`` is the one the reaper treats as
dead, so that is the bound here too. A worker's rows are known by the host name it recorded (a
container's host name is its own).
"""

import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from dicom.services import jobs


class Command(BaseCommand):
    help = "Exit 0 if a db_worker on this host (or --hostname) beat within DICOM_WORKER_STALE_SECONDS, else 1"

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--hostname", default=socket.gethostname(), help="the worker's host (default: this one)"
        )
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="seconds since the last heartbeat still counted healthy (default DICOM_WORKER_STALE_SECONDS)",
        )

    def handle(self, *args, **options) -> None:
        max_age = (
            options["max_age"] if options["max_age"] is not None else settings.DICOM_WORKER_STALE_SECONDS
        )
        hostname = options["hostname"]
        try:
            last_seen = jobs.last_heartbeat(hostname=hostname)
        except DatabaseError as error:
            raise CommandError(f"unhealthy: the database did not answer ({type(error).__name__})") from None
        if last_seen is None:
            raise CommandError(f"unhealthy: no worker on {hostname} has beaten")
        age = (timezone.now() - last_seen).total_seconds()
        if age > max_age:
            raise CommandError(
                f"unhealthy: the worker on {hostname} last beat {age:.0f} s ago (bound {max_age:g} s)"
            )
        self.stdout.write(f"healthy: the worker on {hostname} beat {age:.1f} s ago")
