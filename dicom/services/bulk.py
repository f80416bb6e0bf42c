"""Bulk de-identification: many files at once, resumable, in parallel or through the job queue.

A *plan* (the source, the selection and the options) has a fingerprint; the first run of a plan
creates a ``BulkRun`` and one ``BulkItem`` per source (a stored file, or a path under a directory),
each with its output id chosen up front. Doing an item means: read the source, de-identify it,
write the result (to the service's storage under the key of the item's output id, or to
``OUT/<Study UID>/<Series UID>/<SOP UID>.dcm``), and then record the outcome. Recording happens in
batches, in one transaction per batch: the items' status, the output rows and the audit rows
commit together. An item killed between writing and recording is simply done again and
overwrites the same output, so a rerun of the same plan never makes a second output.

``process_unit`` does file I/O and the engine only (no database), so it runs in worker
processes; ``record_outcomes`` is the only writer of items, outputs and per-file audit rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.utils import timezone

from audit.models import AuditLog
from audit.services import Actor, record_event, record_many
from audit.services import entry as audit_entry
from dicom.models import BulkItem, BulkRun, DicomFile
from dicom.services import events, storage, task_queue
from dicom.services.deid import DeidOptions, deidentify_file
from dicom.services.errors import DicomServiceError
from dicom.services.ingest import apply_header, validate_staged
from dicom.services.keys import deid_key
from dicom.services.metadata import extract_metadata

logger = logging.getLogger(__name__)

_DETAIL_MAX = BulkItem._meta.get_field("detail").max_length
# A UID used as a path component: digits and dots only (a retained UID could hold anything).
_UID_PATH = re.compile(r"^[0-9][0-9.]{0,63}$")
# Items that need no more work: done, refused by the engine (the same input is refused again),
# or not DICOM at all. Failed items (a bug or an outage, not the input) are tried again: by the
# worker while their job has attempts left, by a rerun of the command.
FINAL_STATUSES = (BulkItem.Status.DONE, BulkItem.Status.REFUSED, BulkItem.Status.NOT_DICOM)


class BulkItemsFailedError(Exception):
    """Raised by a queued bulk job some of whose items failed, so that the worker tries it again."""


@dataclass(frozen=True)
class StoredSelection:
    """Filters over stored originals; every given filter narrows the selection."""

    all: bool = False
    study_type: str | None = None
    modality: str | None = None
    owner: str | None = None
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None
    file_ids: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (
            self.all
            or self.study_type
            or self.modality
            or self.owner
            or self.uploaded_after
            or self.uploaded_before
            or self.file_ids
        )

    def describe(self) -> dict:
        return {
            "all": self.all,
            "study_type": self.study_type,
            "modality": self.modality,
            "owner": self.owner,
            "uploaded_after": self.uploaded_after.isoformat() if self.uploaded_after else None,
            "uploaded_before": self.uploaded_before.isoformat() if self.uploaded_before else None,
            "file_ids": sorted(self.file_ids),
        }


@dataclass(frozen=True)
class BulkPlan:
    """What an operator asked for: stored files (``selection``) or a ``directory`` tree, and options.

    With a directory, ``output_dir`` writes the results there and stores nothing in the service;
    without it the results are stored like anonymized uploads, labelled ``study_type``.
    """

    options: DeidOptions
    selection: StoredSelection | None = None
    directory: Path | None = None
    output_dir: Path | None = None
    study_type: str = "general"

    @property
    def source(self) -> str:
        return BulkRun.Source.DIRECTORY if self.directory is not None else BulkRun.Source.STORED

    def describe(self) -> dict:
        if self.directory is not None:
            return {
                "directory": str(self.directory.resolve()),
                "output_dir": str(self.output_dir.resolve()) if self.output_dir else None,
                "study_type": None if self.output_dir else self.study_type,
            }
        return self.selection.describe() if self.selection else {}

    @property
    def fingerprint(self) -> str:
        document = {"source": self.source, "selection": self.describe(), "options": self.options.to_names()}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class WorkSpec:
    """What a worker process needs to do items of one run (plain values: it crosses processes)."""

    options: tuple[str, ...]
    output_dir: str | None
    study_type: str


@dataclass(frozen=True)
class WorkUnit:
    item_id: int
    output_id: str
    source_path: str = ""
    source_key: str = ""


@dataclass
class Outcome:
    """What became of one unit: ``done`` with what was written, or ``refused``/``failed`` with why."""

    item_id: int
    status: str
    detail: str = ""
    output_path: str = ""
    metadata: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    transfer_syntax_uid: str = ""
    storage_key: str = ""
    size: int | None = None
    sha256: str = ""


@dataclass
class RunCounts:
    total: int = 0
    done: int = 0
    refused: int = 0
    failed: int = 0
    not_dicom: int = 0
    pending: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.refused + self.failed + self.not_dicom


# --- operators and selections ---------------------------------------------------------------


def operator_account(*, username: str | None) -> AbstractBaseUser:
    """The user a bulk run acts as: ``username``, or the system account (created if missing).

    The system account is created inactive with an unusable password: it can own files and audit
    rows but can never log in. Raises ``DicomServiceError`` for an unknown ``username``.
    """
    users = get_user_model()
    if username:
        try:
            return users.objects.get(**{users.USERNAME_FIELD: username})
        except users.DoesNotExist:
            raise DicomServiceError(f"no user named {username!r}") from None
    account, created = users.objects.get_or_create(
        **{users.USERNAME_FIELD: settings.DICOM_SYSTEM_USERNAME}, defaults={"is_active": False}
    )
    if created:
        account.set_unusable_password()
        account.save(update_fields=["password"])
    return account


def select_stored_files(selection: StoredSelection) -> QuerySet[DicomFile]:
    """Stored originals (completed, not de-identified) matching every filter of ``selection``.

    ``all`` leaves out originals that already have a completed de-identified file derived from
    them; explicit filters do not (asking for a file by id de-identifies it again).
    """
    files = DicomFile.objects.filter(status=DicomFile.Status.COMPLETED, anonymized=False).exclude(
        storage_key=""
    )
    if selection.all:
        derived = DicomFile.objects.filter(
            source=OuterRef("pk"), anonymized=True, status=DicomFile.Status.COMPLETED
        )
        files = files.exclude(Exists(derived))
    if selection.study_type:
        files = files.filter(study_type=selection.study_type)
    if selection.modality:
        files = files.filter(modality=selection.modality)
    if selection.owner:
        users = get_user_model()
        if not users.objects.filter(**{users.USERNAME_FIELD: selection.owner}).exists():
            raise DicomServiceError(f"no user named {selection.owner!r}")
        files = files.filter(**{f"owner__{users.USERNAME_FIELD}": selection.owner})
    if selection.uploaded_after:
        files = files.filter(created_at__gte=selection.uploaded_after)
    if selection.uploaded_before:
        files = files.filter(created_at__lt=selection.uploaded_before)
    if selection.file_ids:
        files = files.filter(pk__in=selection.file_ids)
    return files.order_by("created_at", "pk")


def scan_directory(directory: Path) -> Iterator[Path]:
    """Every regular file under ``directory``, recursively, in a stable order (symlinks not followed)."""
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                yield path


def looks_like_dicom(path: Path) -> bool:
    """True when the file has the Part 10 ``DICM`` prefix after its 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


# --- runs and items ---------------------------------------------------------------------------


def find_run(plan: BulkPlan) -> BulkRun | None:
    return BulkRun.objects.filter(fingerprint=plan.fingerprint).first()


def prepare_run(*, plan: BulkPlan, operator: AbstractBaseUser) -> BulkRun:
    """Find or create the run of ``plan`` and add an item for every source not yet in it.

    Sources already in the run keep their item (and its status), so a rerun skips what is done.
    Directory files without the DICOM prefix get a ``not_dicom`` item and are never worked on.
    """
    run, _ = BulkRun.objects.get_or_create(
        fingerprint=plan.fingerprint,
        defaults={
            "source": plan.source,
            "selection": plan.describe(),
            "deid_options": plan.options.to_names(),
            "operator": operator,
            "operator_name": operator.get_username(),
        },
    )
    BulkRun.objects.filter(pk=run.pk).update(status=BulkRun.Status.RUNNING)
    for batch in batched(_new_items(run, plan), 1000):
        BulkItem.objects.bulk_create(batch, ignore_conflicts=True)
    return run


def _new_items(run: BulkRun, plan: BulkPlan) -> Iterator[BulkItem]:
    if plan.directory is not None:
        known = set(run.items.values_list("source_path", flat=True))
        for path in scan_directory(plan.directory):
            text = str(path.resolve())
            if text in known:
                continue
            status = BulkItem.Status.PENDING if looks_like_dicom(path) else BulkItem.Status.NOT_DICOM
            yield BulkItem(run=run, source_path=text, status=status)
    else:
        known = set(run.items.values_list("source_file_id", flat=True))
        for file_id in select_stored_files(plan.selection).values_list("pk", flat=True).iterator():
            if file_id not in known:
                yield BulkItem(run=run, source_file_id=file_id)


def dry_run_counts(plan: BulkPlan) -> RunCounts:
    """What a run of ``plan`` would do now, without writing anything."""
    run = find_run(plan)
    final = (
        dict(run.items.filter(status__in=FINAL_STATUSES).values_list("source_path", "status")) if run else {}
    )
    final_files = set(
        run.items.filter(status__in=FINAL_STATUSES).values_list("source_file_id", flat=True) if run else []
    )
    counts = RunCounts()
    if plan.directory is not None:
        for path in scan_directory(plan.directory):
            counts.total += 1
            status = final.get(str(path.resolve()))
            if status == BulkItem.Status.DONE:
                counts.done += 1
            elif status == BulkItem.Status.REFUSED:
                counts.refused += 1
            elif status == BulkItem.Status.NOT_DICOM or not looks_like_dicom(path):
                counts.not_dicom += 1
            else:
                counts.pending += 1
    else:
        for file_id in select_stored_files(plan.selection).values_list("pk", flat=True):
            counts.total += 1
            if file_id in final_files:
                counts.done += 1
            else:
                counts.pending += 1
    return counts


def reclaim_orphaned_items(run: BulkRun) -> int:
    """Put back to pending the queued items whose job no longer exists or has finished.

    Items stay ``queued`` only while a live job (ready or running) holds them; a job that ended
    without recording them (or a command killed between enqueueing and committing) leaves them
    queued, and this makes them workable again. Returns how many were reclaimed.
    """
    return (
        run.items.filter(status=BulkItem.Status.QUEUED)
        .exclude(task_queue.live_job(OuterRef("task_id")))
        .update(status=BulkItem.Status.PENDING, task_id=None)
    )


def workable_items(run: BulkRun) -> QuerySet[BulkItem]:
    """Items of ``run`` still to do here: pending, or failed before (tried again)."""
    return run.items.filter(status__in=[BulkItem.Status.PENDING, BulkItem.Status.FAILED]).order_by("pk")


def work_units(items: Iterable[BulkItem]) -> Iterator[WorkUnit]:
    for item in items:
        yield WorkUnit(
            item_id=item.pk,
            output_id=str(item.output_id),
            source_path=item.source_path,
            source_key=item.source_file.storage_key if item.source_file is not None else "",
        )


def work_spec(run: BulkRun) -> WorkSpec:
    output_dir = run.selection.get("output_dir") if run.source == BulkRun.Source.DIRECTORY else None
    return WorkSpec(
        options=tuple(run.deid_options),
        output_dir=output_dir,
        study_type=run.selection.get("study_type") or "general",
    )


def run_counts(run: BulkRun, *, save: bool = True) -> RunCounts:
    """The run's items counted by status (one query); with ``save`` also stored on the run for the admin."""
    by_status = dict(run.items.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    counts = RunCounts(
        total=sum(by_status.values()),
        done=by_status.get(BulkItem.Status.DONE, 0),
        refused=by_status.get(BulkItem.Status.REFUSED, 0),
        failed=by_status.get(BulkItem.Status.FAILED, 0),
        not_dicom=by_status.get(BulkItem.Status.NOT_DICOM, 0),
        pending=by_status.get(BulkItem.Status.PENDING, 0) + by_status.get(BulkItem.Status.QUEUED, 0),
    )
    if not save:
        return counts
    BulkRun.objects.filter(pk=run.pk).update(
        total=counts.total,
        done=counts.done,
        refused=counts.refused,
        failed=counts.failed,
        not_dicom=counts.not_dicom,
        status=BulkRun.Status.RUNNING if counts.pending else BulkRun.Status.FINISHED,
    )
    return counts


def grouped_reasons(run: BulkRun, status: str) -> list[tuple[str, int]]:
    """``(detail, count)`` of the run's items in ``status``, most frequent first (details are PHI-free)."""
    rows = run.items.filter(status=status).values("detail").annotate(n=Count("pk")).order_by("-n", "detail")
    return [(row["detail"] or "(no detail)", row["n"]) for row in rows]


def record_summary(*, run: BulkRun, actor: Actor, counts: RunCounts, done_now: int, skipped: int) -> None:
    """The run's one summary audit row: counts and the run id, never a path or a patient value."""
    record_event(
        actor=actor,
        action=AuditLog.Action.BULK_ANONYMIZE,
        success=counts.failed == 0,
        reason=(
            f"run {run.id}: {done_now} done, {skipped} skipped, {counts.refused} refused, "
            f"{counts.failed} failed, {counts.not_dicom} not DICOM, {counts.pending} left"
        ),
    )


# --- doing items (no database) --------------------------------------------------------------


def process_units(spec: WorkSpec, units: list[WorkUnit]) -> list[Outcome]:
    """Do ``units`` one after the other; never raises for a bad input (it becomes an outcome)."""
    options = DeidOptions.from_names(spec.options)
    key = deid_key()
    return [process_unit(spec, unit, options=options, key=key) for unit in units]


def process_unit(spec: WorkSpec, unit: WorkUnit, *, options: DeidOptions, key: bytes) -> Outcome:
    """De-identify one source and write its output; file I/O and the engine only, no database.

    Input problems (``DicomServiceError``: invalid, refused, failed verification) give a
    ``refused`` outcome with the error's PHI-free detail, final; anything else (a bug in the
    engine, storage gone) a ``failed`` one naming only the exception class (its message could
    quote a value), tried again.
    """
    if settings.DICOM_TEST_JOB_DELAY_MS:
        time.sleep(settings.DICOM_TEST_JOB_DELAY_MS / 1000)
    try:
        if spec.output_dir is not None:
            return _to_directory(spec, unit, options=options, key=key)
        return _to_storage(unit, options=options, key=key)
    except DicomServiceError as error:
        return Outcome(
            item_id=unit.item_id, status=BulkItem.Status.REFUSED, detail=error.detail[:_DETAIL_MAX]
        )
    except Exception as error:
        logger.exception("bulk item %s failed unexpectedly", unit.item_id)
        return Outcome(
            item_id=unit.item_id,
            status=BulkItem.Status.FAILED,
            detail=f"internal error ({type(error).__name__})",
        )


def _to_directory(spec: WorkSpec, unit: WorkUnit, *, options: DeidOptions, key: bytes) -> Outcome:
    validate_staged(Path(unit.source_path))
    output_dir = Path(spec.output_dir)
    partial_dir = output_dir / ".partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    partial = partial_dir / f"{unit.output_id}.dcm"
    try:
        dataset, _ = deidentify_file(unit.source_path, str(partial), options=options, key=key)
        parts = [str(dataset.get(keyword, "")) for keyword in ("StudyInstanceUID", "SeriesInstanceUID")]
        parts.append(str(dataset.SOPInstanceUID))
        if not all(_UID_PATH.match(part) for part in parts):
            raise DicomServiceError("a de-identified UID is not usable as a file name")
        destination = output_dir.joinpath(parts[0], parts[1], f"{parts[2]}.dcm")
        storage.durable_replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return Outcome(
        item_id=unit.item_id,
        status=BulkItem.Status.DONE,
        output_path=str(destination.relative_to(output_dir)),
    )


def _to_storage(unit: WorkUnit, *, options: DeidOptions, key: bytes) -> Outcome:
    produced = storage.new_staging_path()
    staged_source = None
    try:
        if unit.source_key:
            # A stored original goes through the upload's validating walk too: in place when the
            # storage is local, from a staged copy when it is remote (S3).
            local = storage.local_path(unit.source_key)
            if local is None:
                staged_source = storage.new_staging_path()
                with storage.open_stored(unit.source_key) as stored, open(staged_source, "wb") as copy:
                    shutil.copyfileobj(stored, copy, 1024 * 1024)
            source_path = local or staged_source
            validate_staged(source_path)
            dataset, report = deidentify_file(source_path, str(produced), options=options, key=key)
        else:
            validate_staged(Path(unit.source_path))
            dataset, report = deidentify_file(unit.source_path, str(produced), options=options, key=key)
        metadata = extract_metadata(dataset)
        # The key comes from the item's output id, chosen before any work: doing the item again
        # replaces this very object instead of leaving a second one behind.
        stored = storage.store_staged_file(
            staged_path=produced, key=storage.key_for(uuid.UUID(unit.output_id))
        )
    finally:
        produced.unlink(missing_ok=True)
        if staged_source is not None:
            staged_source.unlink(missing_ok=True)
    return Outcome(
        item_id=unit.item_id,
        status=BulkItem.Status.DONE,
        metadata=metadata,
        report=report.to_dict(),
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
        storage_key=stored.key,
        size=stored.size,
        sha256=stored.sha256,
    )


# --- recording outcomes ---------------------------------------------------------------------


def record_outcomes(*, run: BulkRun, actor: Actor, outcomes: list[Outcome]) -> int:
    """Commit a batch of outcomes in one transaction: items, output rows, one audit row per file.

    Items already done (another process recorded them first) are left alone, so an outcome is
    recorded at most once. Returns how many items this call moved to a new status.
    """
    if not outcomes:
        return 0
    by_item = {outcome.item_id: outcome for outcome in outcomes}
    user = actor.user if actor.user is not None and actor.user.is_authenticated else None
    with transaction.atomic():
        items = list(
            BulkItem.objects.select_for_update(of=("self",))
            .filter(pk__in=by_item, run=run)
            .exclude(status=BulkItem.Status.DONE)
            .select_related("source_file")
        )
        files: list[DicomFile] = []
        audits: list[AuditLog] = []
        for item in items:
            outcome = by_item[item.pk]
            item.status, item.detail = outcome.status, outcome.detail[:_DETAIL_MAX]
            item.output_path = outcome.output_path
            if outcome.status == BulkItem.Status.DONE and outcome.storage_key:
                files.append(_output_row(run, item, outcome, user))
            audits.append(
                audit_entry(
                    actor=actor,
                    action=AuditLog.Action.BULK_ANONYMIZE,
                    file_id=item.output_id,
                    success=outcome.status == BulkItem.Status.DONE,
                    reason=outcome.detail,
                )
            )
        DicomFile.objects.bulk_create(files, ignore_conflicts=True)
        # Most of a batch shares one status and detail: one UPDATE per pair is far cheaper than
        # bulk_update's CASE over every row and field; only the output paths differ per row.
        groups: dict[tuple[str, str], list[int]] = {}
        for item in items:
            groups.setdefault((item.status, item.detail), []).append(item.pk)
        for (status, detail), ids in groups.items():
            BulkItem.objects.filter(pk__in=ids).update(
                status=status, detail=detail, updated_at=timezone.now()
            )
        _set_output_paths([item for item in items if item.output_path])
        record_many(audits)
        events.files_stored(files)
    return len(items)


def _set_output_paths(items: list[BulkItem]) -> None:
    # One UPDATE ... CASE for the batch, written out: bulk_update builds an expression tree per
    # row, which costs the recording process about as much as the database does.
    if not items:
        return
    quote = connection.ops.quote_name
    whens = " ".join(["WHEN %s THEN %s"] * len(items))
    marks = ", ".join(["%s"] * len(items))
    # Only quoted identifiers and placeholders go into the text; the values are parameters.
    table, path, key = quote(BulkItem._meta.db_table), quote("output_path"), quote("id")
    sql = f"UPDATE {table} SET {path} = CASE {key} {whens} END WHERE {key} IN ({marks})"  # noqa: S608
    params = [value for item in items for value in (item.pk, item.output_path)] + [item.pk for item in items]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _output_row(run: BulkRun, item: BulkItem, outcome: Outcome, user) -> DicomFile:
    source = item.source_file
    output = DicomFile(
        id=item.output_id,
        owner=user,
        source=source,
        status=DicomFile.Status.COMPLETED,
        anonymized=True,
        study_type=source.study_type if source is not None else work_spec(run).study_type,
        deid_options=list(run.deid_options),
        deid_report=outcome.report,
        storage_key=outcome.storage_key,
        size=outcome.size,
        sha256=outcome.sha256,
        transfer_syntax_uid=outcome.transfer_syntax_uid,
    )
    apply_header(output, outcome.metadata)
    return output


def give_up_items(*, run_id: str, item_ids: list[int], detail: str) -> int:
    """Mark the unfinished ``item_ids`` failed with ``detail`` (a job that will not be tried again).

    Each item given up writes its failure row (``bulk_anonymize``, the output's id, the run's
    operator) in the same transaction, as ``record_outcomes`` does for the items a job finished.
    """
    with transaction.atomic():
        run = BulkRun.objects.select_related("operator").filter(pk=run_id).first()
        items = list(
            BulkItem.objects.select_for_update()
            .filter(run_id=run_id, pk__in=item_ids)
            .exclude(status__in=FINAL_STATUSES)
            .only("pk", "output_id")
        )
        if not items:
            return 0
        BulkItem.objects.filter(pk__in=[item.pk for item in items]).update(
            status=BulkItem.Status.FAILED, detail=detail[:_DETAIL_MAX], task_id=None
        )
        actor = Actor(user=run.operator if run is not None else None)
        record_many(
            audit_entry(
                actor=actor,
                action=AuditLog.Action.BULK_ANONYMIZE,
                file_id=item.output_id,
                success=False,
                reason=detail,
            )
            for item in items
        )
        return len(items)


def _give_up_job(args: list, detail: str) -> None:
    if len(args) == 2:
        give_up_items(run_id=args[0], item_ids=args[1], detail=detail)


task_queue.register_give_up(task_queue.ANONYMIZE_BULK_ITEMS, _give_up_job)


def run_items_job(*, run_id: str, item_ids: list[int]) -> dict:
    """The body of a queued bulk job: do the unfinished ``item_ids`` of run ``run_id`` and record them.

    Idempotent: finished items are skipped, outputs are keyed by the items' output ids. Returns
    the job's counts by status. When an item failed (not refused), the other outcomes are recorded
    and the job raises ``BulkItemsFailedError`` with the failed items still queued: the worker
    tries the job again, and at ``DICOM_JOB_MAX_ATTEMPTS`` marks them failed (``give_up_items``).
    """
    run = BulkRun.objects.select_related("operator").filter(pk=run_id).first()
    if run is None:
        return {"missing": len(item_ids)}
    items = list(
        run.items.filter(pk__in=item_ids).exclude(status__in=FINAL_STATUSES).select_related("source_file")
    )
    outcomes = process_units(work_spec(run), list(work_units(items)))
    failed = [outcome for outcome in outcomes if outcome.status == BulkItem.Status.FAILED]
    record_outcomes(
        run=run,
        actor=Actor(user=run.operator),
        outcomes=[outcome for outcome in outcomes if outcome.status != BulkItem.Status.FAILED],
    )
    if failed:
        reasons = ", ".join(sorted({outcome.detail for outcome in failed}))
        raise BulkItemsFailedError(f"{len(failed)} of {len(outcomes)} items failed: {reasons}")
    return dict(Counter(outcome.status for outcome in outcomes))


def enqueue_items(*, run: BulkRun, chunk_size: int) -> int:
    """Hand the run's workable items to the job queue, ``chunk_size`` items per job; return how many.

    Each job and its items' ``queued`` mark commit together, so an item is queued exactly when a
    job holds it.
    """
    ids = list(workable_items(run).values_list("pk", flat=True))
    for batch in batched(ids, chunk_size):
        with transaction.atomic():
            job_id = task_queue.enqueue(task_queue.ANONYMIZE_BULK_ITEMS, str(run.pk), batch)
            BulkItem.objects.filter(pk__in=batch).update(status=BulkItem.Status.QUEUED, task_id=job_id)
    return len(ids)


def batched(iterable: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for element in iterable:
        batch.append(element)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
