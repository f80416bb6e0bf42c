"""Run the DIMSE node (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET SCP) until SIGTERM or SIGINT; ``make run`` starts it."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dimse import scp, services
from dimse.models import validate_ae_title

CANNOT_LISTEN = 3


class Command(BaseCommand):
    help = (
        "Listen for DICOM associations (C-ECHO, C-STORE, C-FIND) as DICOM_SCP_AE_TITLE (stores as received) "
        "and DICOM_SCP_DEID_AE_TITLE (stores de-identified); stops on SIGTERM or SIGINT"
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", help="address to listen on (default: DICOM_SCP_HOST)")
        parser.add_argument("--port", type=int, help="port to listen on (default: DICOM_SCP_PORT)")
        parser.add_argument(
            "--ae-title", help="AE title that stores as received (default: DICOM_SCP_AE_TITLE)"
        )

    def handle(self, *args, **options) -> None:
        host = options["host"] or settings.DICOM_SCP_HOST
        port = options["port"] if options["port"] is not None else settings.DICOM_SCP_PORT
        if not 0 < port < 65536:
            raise CommandError(f"--port must be between 1 and 65535, got {port}")
        if options["ae_title"]:
            settings.DICOM_SCP_AE_TITLE = options["ae_title"]
        titles = (settings.DICOM_SCP_AE_TITLE, settings.DICOM_SCP_DEID_AE_TITLE)
        for title in titles:
            try:
                validate_ae_title(title)
            except Exception as error:
                raise CommandError(f"AE title {title!r}: {' '.join(error.messages)}") from None
        if titles[0] == titles[1]:
            raise CommandError("DICOM_SCP_AE_TITLE and DICOM_SCP_DEID_AE_TITLE must differ")
        try:
            services.deid_options()
        except ValueError as error:
            raise CommandError(f"DICOM_SCP_DEID_OPTIONS: {error}") from None

        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        ae = scp.build_ae(ae_title=titles[0])
        try:
            server = scp.start_server(ae, (host, port))
        except OSError as error:
            # Exit status 3: scripts/run.sh stops the whole service rather than retrying.
            raise CommandError(
                f"cannot listen on {host}:{port}: {error.strerror or error}", returncode=CANNOT_LISTEN
            ) from None
        self.stdout.write(
            f"DIMSE node listening on {host}:{port} as {titles[0]} and {titles[1]}", ending="\n"
        )
        self.stdout.flush()
        try:
            stop.wait()
        finally:
            server.shutdown()
            self.stdout.write("DIMSE node stopped")
