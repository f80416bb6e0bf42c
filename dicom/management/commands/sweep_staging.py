"""Remove what requests or jobs which died left behind: staged files, and stored objects without a row."""

from django.conf import settings
from django.core.management.base import BaseCommand

from dicom.services import storage
from dicom.services.orphans import sweep_orphaned_objects


class Command(BaseCommand):
    help = (
        "Remove staged files, and stored objects without a file row, older than "
        "DICOM_STAGING_MAX_AGE_SECONDS (with --all: every one; only while nothing is running, as the "
        "embedded server does before it starts)"
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--all", action="store_true", help="remove every staged file, whatever its age")

    def handle(self, *args, **options) -> None:
        age = 0 if options["all"] else settings.DICOM_STAGING_MAX_AGE_SECONDS
        removed = storage.sweep_staging(older_than_seconds=age)
        self.stdout.write(f"removed {removed} staged file(s)")
        # Objects without a row: with --all (nothing is storing), every one; else only old ones.
        orphans = sweep_orphaned_objects(older_than_seconds=age)
        self.stdout.write(f"removed {orphans} stored object(s) without a file row")
