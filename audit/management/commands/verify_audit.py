"""Walk the audit trail's hash chain and name the first row that does not verify (exit status 1)."""

import re

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from audit import chain
from audit.models import AuditLog

_ANCHOR = re.compile(r"^(\d+):([0-9a-f]{64})$")


def _anchor(text: str) -> tuple[int, str]:
    match = _ANCHOR.match(text.strip().lower())
    if match is None:
        raise CommandError(f"--anchor must be ROW_ID:HASH (64 hex digits), got {text!r}")
    return int(match.group(1)), match.group(2)


class Command(BaseCommand):
    help = (
        "Check that every audit row is unchanged and in place: each row's hash covers its fields and "
        "the previous row's hash. Prints the head (row id and hash) to note as an anchor for later runs."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--anchor",
            action="append",
            default=[],
            metavar="ROW_ID:HASH",
            help="A head printed by an earlier run: that row must still be there with that hash "
            "(finds rows removed from the end, or a trail rewritten from scratch). Repeatable.",
        )

    def handle(self, *args, anchor: list[str], **options):
        anchors = dict(_anchor(text) for text in anchor)
        # One transaction: a consistent snapshot of the trail, and PostgreSQL's server-side cursor
        # (the trail is read in chunks, never whole) lives until the walk is done with it.
        with transaction.atomic():
            rows = (
                AuditLog.objects.order_by("id")
                .values("id", "prev_hash", "row_hash", *chain.DIGEST_FIELDS)
                .iterator(chunk_size=5000)
            )
            try:
                result = chain.walk(rows, anchors=anchors)
            finally:
                rows.close()
        if result.first_break is not None:
            raise CommandError(
                f"audit row {result.first_break.row_id} does not verify: {result.first_break.reason} "
                f"({result.rows} rows before it verified)",
                returncode=1,
            )
        missing = sorted(set(anchors) - result.anchors_found)
        if missing:
            raise CommandError(
                f"anchor row {missing[0]} is not in the trail: rows were removed from its end "
                f"(the trail now ends at row {result.head_id}, {result.rows} rows verified)",
                returncode=1,
            )
        self.stdout.write(f"{result.rows} audit rows verified")
        if result.head_id is not None:
            self.stdout.write(f"head: {result.head_id}:{result.head_hash}")
