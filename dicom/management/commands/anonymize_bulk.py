"""``manage.py anonymize_bulk``: de-identify many files, in parallel or through the job queue.

The state lives in the database (``BulkRun``/``BulkItem``, see ``dicom.services.bulk``): running
the same command again skips what is done and finishes the rest. Worker processes do file I/O
and the engine only; this process records their outcomes in batches.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import uuid
from argparse import BooleanOptionalAction
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import UTC, date, datetime
from pathlib import Path

import django
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.utils.dateparse import parse_date, parse_datetime

from audit.services import Actor
from dicom.models import BulkItem, BulkRun
from dicom.services import bulk
from dicom.services.deid import OPTION_NAMES, DeidOptions
from dicom.services.errors import DicomServiceError
from dicom.services.keys import deid_key

STUDY_TYPE_HELP = (
    "only stored files of this study type; with --from-dir, the study type of the stored results"
)


def _moment(text: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (UTC when it names no zone)."""
    parsed: datetime | date | None = parse_datetime(text) or parse_date(text)
    if parsed is None:
        raise ValueError(f"not an ISO date or date-time: {text!r}")
    if not isinstance(parsed, datetime):
        parsed = datetime(parsed.year, parsed.month, parsed.day)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Progress:
    """A tqdm bar on a terminal; plain lines every ``interval`` seconds otherwise."""

    def __init__(self, *, stream, total: int, initial: int, interval: float = 5.0) -> None:
        self.stream, self.total, self.count = stream, total, initial
        self.started = self.last_line = time.monotonic()
        self.interval = interval
        self.initial = initial
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="file", file=stream, dynamic_ncols=True)

    def update_to(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count - self.count)
        self.count = count
        now = time.monotonic()
        if self.bar is None and now - self.last_line >= self.interval:
            self.last_line = now
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = (self.count - self.initial) / elapsed
        left = self.total - self.count
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        return f"{self.count}/{self.total} files, {rate:.1f} files/s, ETA {eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self.stream.write(self._line(time.monotonic()) + "\n")


_INHERITED_CONNECTIONS: list = []


def _child_init() -> None:
    """Set up a worker process: Django ready, and no use of the parent's database connections.

    Under fork a child inherits the parent's open connections; closing them from here would
    close the parent's sessions too (the protocol's goodbye goes over the shared socket), so the
    child keeps the objects untouched and drops them from Django's handler: if the child ever
    needed the database it would open its own connection.
    """
    if not apps.ready:
        django.setup()
    for connection in connections.all(initialized_only=True):
        _INHERITED_CONNECTIONS.append(connection.connection)
        connection.connection = None
    # A parent killed with SIGKILL cannot stop its pool, and the children would wait for work
    # for ever (they hold the task pipe's write end themselves): each one leaves once orphaned.
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


class Command(BaseCommand):
    help = (
        "De-identify stored files (--all or filters) or a directory tree (--from-dir), resumably: "
        "running the same command again skips what is done."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        stored = parser.add_argument_group("stored files (every filter narrows the selection)")
        stored.add_argument("--all", action="store_true", help="every stored original not yet de-identified")
        stored.add_argument("--study-type", help=STUDY_TYPE_HELP)
        stored.add_argument("--modality", help="only stored files of this modality (e.g. CT)")
        stored.add_argument("--owner", metavar="USERNAME", help="only stored files uploaded by this user")
        stored.add_argument("--uploaded-after", type=_moment, metavar="DATE", help="uploaded at or after")
        stored.add_argument("--uploaded-before", type=_moment, metavar="DATE", help="uploaded before")
        stored.add_argument("--file-id", action="append", default=[], metavar="ID", help="repeatable")
        tree = parser.add_argument_group("a directory tree")
        tree.add_argument(
            "--from-dir", type=Path, metavar="DIR", help="every DICOM file under DIR, recursively"
        )
        tree.add_argument(
            "--output-dir",
            type=Path,
            metavar="OUT",
            help="write OUT/<Study UID>/<Series UID>/<SOP UID>.dcm and store nothing in the service",
        )
        deid = parser.add_argument_group("de-identification options (default: DICOM_DEID_DEFAULT_OPTIONS)")
        for name in OPTION_NAMES:
            deid.add_argument(
                f"--{name.replace('_', '-')}", dest=name, action=BooleanOptionalAction, default=None
            )
        parser.add_argument(
            "--user", metavar="USERNAME", help="act as this user (default: DICOM_SYSTEM_USERNAME)"
        )
        parser.add_argument("--dry-run", action="store_true", help="say what would be done; write nothing")
        parser.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
        parser.add_argument("--enqueue", action="store_true", help="hand the work to db_worker processes")
        parser.add_argument("--batch-size", type=int, default=200, help="outcomes recorded per transaction")
        parser.add_argument("--chunk-size", type=int, default=25, help="files per queued job (--enqueue)")
        parser.add_argument(
            "--poll-interval", type=float, default=1.0, help="seconds between looks (--enqueue)"
        )

    def handle(self, *args, **opts) -> None:
        plan = self._plan(opts)
        if opts["workers"] < 1 or opts["batch_size"] < 1 or opts["chunk_size"] < 1:
            raise CommandError("--workers, --batch-size and --chunk-size must be at least 1")
        if opts["enqueue"] and opts["workers"] != 1:
            raise CommandError(
                "--enqueue and --workers are alternatives: the db_worker processes do the work"
            )
        try:
            if opts["dry_run"]:
                self._dry_run(plan)
                return
            operator = bulk.operator_account(username=opts["user"])
            run = bulk.prepare_run(plan=plan, operator=operator)
        except DicomServiceError as error:
            raise CommandError(error.detail) from None
        actor = Actor(user=operator)
        bulk.reclaim_orphaned_items(run)
        before = bulk.run_counts(run)
        self.stdout.write(
            f"bulk run {run.id}: {before.total} files, {before.done} already done, {before.pending} to do"
        )
        if opts["enqueue"]:
            self._enqueue_and_follow(run, before, chunk_size=opts["chunk_size"], poll=opts["poll_interval"])
        else:
            self._work_locally(run, actor, before, workers=opts["workers"], batch_size=opts["batch_size"])
        counts = bulk.run_counts(run)
        done_now = counts.done - before.done
        bulk.record_summary(run=run, actor=actor, counts=counts, done_now=done_now, skipped=before.done)
        self._summary(run, counts, done_now=done_now, skipped=before.done)
        if counts.failed:
            raise CommandError(
                f"{counts.failed} file(s) failed; run the same command again to retry them", returncode=1
            )

    # --- the plan ---------------------------------------------------------------------------

    def _plan(self, opts: dict) -> bulk.BulkPlan:
        overrides = {name: opts[name] for name in OPTION_NAMES if opts[name] is not None}
        try:
            options = DeidOptions.with_overrides(settings.DICOM_DEID_DEFAULT_OPTIONS, overrides)
        except ValueError as error:
            raise CommandError(str(error)) from None
        selection = bulk.StoredSelection(
            all=opts["all"],
            study_type=opts["study_type"],
            modality=opts["modality"],
            owner=opts["owner"],
            uploaded_after=opts["uploaded_after"],
            uploaded_before=opts["uploaded_before"],
            file_ids=tuple(opts["file_id"]),
        )
        if opts["from_dir"] is not None:
            directory = opts["from_dir"]
            if not directory.is_dir():
                raise CommandError(f"--from-dir {directory} is not a directory")
            narrowing = selection.all or selection.modality or selection.owner or selection.file_ids
            if narrowing or selection.uploaded_after or selection.uploaded_before:
                raise CommandError(
                    "--from-dir takes no stored-file filters (only --study-type, for the results)"
                )
            output_dir = opts["output_dir"]
            if output_dir is not None:
                output_dir.mkdir(parents=True, exist_ok=True)
                if output_dir.resolve().is_relative_to(directory.resolve()):
                    raise CommandError("--output-dir must not be inside --from-dir")
            return bulk.BulkPlan(
                options=options,
                directory=directory,
                output_dir=output_dir,
                study_type=opts["study_type"] or "general",
            )
        if opts["output_dir"] is not None:
            raise CommandError("--output-dir goes with --from-dir")
        if selection.is_empty():
            raise CommandError(
                "choose a source: --all, a filter (--study-type, --modality, ...) or --from-dir DIR"
            )
        for file_id in selection.file_ids:
            try:
                uuid.UUID(file_id)
            except ValueError:
                raise CommandError(f"--file-id {file_id!r} is not a file id") from None
        return bulk.BulkPlan(options=options, selection=selection)

    def _dry_run(self, plan: bulk.BulkPlan) -> None:
        counts = bulk.dry_run_counts(plan)
        self.stdout.write(
            f"dry run: {counts.total} files; would de-identify {counts.pending}; "
            f"{counts.done} already done, {counts.refused} refused before, {counts.not_dicom} not DICOM; "
            "nothing written"
        )

    # --- local processes --------------------------------------------------------------------

    def _work_locally(
        self, run: BulkRun, actor: Actor, before: bulk.RunCounts, *, workers: int, batch_size: int
    ):
        items = bulk.workable_items(run).select_related("source_file")
        units = bulk.work_units(items.iterator(chunk_size=1000))
        spec = bulk.work_spec(run)
        progress = Progress(stream=self.stdout._out, total=before.total, initial=before.finished)
        pending: list[bulk.Outcome] = []
        finished = before.finished
        last_flush = time.monotonic()

        def take(outcomes: list[bulk.Outcome], *, force: bool = False) -> None:
            nonlocal finished, last_flush
            pending.extend(outcomes)
            finished += len(outcomes)
            now = time.monotonic()
            if pending and (force or len(pending) >= batch_size or now - last_flush >= 2.0):
                bulk.record_outcomes(run=run, actor=actor, outcomes=pending)
                pending.clear()
                last_flush = now
            progress.update_to(finished)

        try:
            if workers == 1:
                options, key = DeidOptions.from_names(spec.options), deid_key()
                for unit in units:
                    take([bulk.process_unit(spec, unit, options=options, key=key)])
            else:
                self._pool(spec, units, workers=workers, take=take)
        finally:
            take([], force=True)
            progress.close()

    def _pool(self, spec: bulk.WorkSpec, units, *, workers: int, take) -> None:
        # Units go out in small chunks (less inter-process traffic), a bounded number at a time
        # (a kill loses little work, memory stays flat).
        chunk, window = 8, workers * 4
        # Children are forked: no open connection of ours should be inherited when we can help it.
        for connection in connections.all(initialized_only=True):
            if not connection.in_atomic_block:
                connection.close()
        context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
        batches = bulk.batched(units, chunk)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_child_init) as pool:
            in_flight: deque = deque()
            exhausted = False
            while in_flight or not exhausted:
                while not exhausted and len(in_flight) < window:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                    else:
                        in_flight.append(pool.submit(bulk.process_units, spec, batch))
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    in_flight.remove(future)
                    take(future.result())

    # --- the job queue ----------------------------------------------------------------------

    def _enqueue_and_follow(
        self, run: BulkRun, before: bulk.RunCounts, *, chunk_size: int, poll: float
    ) -> None:
        queued = bulk.enqueue_items(run=run, chunk_size=chunk_size)
        self.stdout.write(f"queued {queued} files in jobs of {chunk_size}; following the db_worker processes")
        progress = Progress(stream=self.stdout._out, total=before.total, initial=before.finished)
        try:
            while True:
                # Reads only: the workers are the writers while the run goes on.
                counts = bulk.run_counts(run, save=False)
                progress.update_to(counts.finished)
                if not counts.pending:
                    break
                # A job given up or lost leaves its items queued without a live job: put them back.
                if bulk.reclaim_orphaned_items(run):
                    bulk.enqueue_items(run=run, chunk_size=chunk_size)
                time.sleep(poll)
        finally:
            progress.close()

    # --- the summary ------------------------------------------------------------------------

    def _summary(self, run: BulkRun, counts: bulk.RunCounts, *, done_now: int, skipped: int) -> None:
        self.stdout.write(
            f"summary of bulk run {run.id}: {done_now} done, {skipped} skipped (done before), "
            f"{counts.refused} refused, {counts.failed} failed, {counts.not_dicom} not DICOM"
        )
        for label, status in (("refused", BulkItem.Status.REFUSED), ("failed", BulkItem.Status.FAILED)):
            for detail, number in bulk.grouped_reasons(run, status):
                self.stdout.write(f"  {label}: {number} x {detail}")
