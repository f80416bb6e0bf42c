"""De-identifying stored files in the background.

``request_anonymization`` creates the derived row (``processing``) and enqueues its job in one
transaction: the job row of django-tasks-db lives in the same database, so the job exists if and
only if the file row commits. ``run_anonymization`` is the job's body; it is idempotent, so a job
taken up again after a crash ends with one stored output and the row ``completed`` once.
"""

import logging
import shutil
import time
import uuid

from django.conf import settings
from django.db import transaction

from audit.models import AuditLog
from audit.services import Actor, entry, operation, record_event, record_many
from dicom.models import DicomFile
from dicom.services import events, storage, task_queue
from dicom.services.bulk import batched
from dicom.services.deid import DeidOptions, deidentify_file
from dicom.services.errors import DicomServiceError, FileNotReadyError
from dicom.services.ingest import apply_header, validate_staged
from dicom.services.keys import deid_key
from dicom.services.metadata import extract_metadata
from dicom.services.search import INDEX_FIELDS

logger = logging.getLogger(__name__)

_DETAIL_MAX = DicomFile._meta.get_field("failure_detail").max_length


def request_anonymization(*, actor: Actor, source: DicomFile, options: DeidOptions) -> DicomFile:
    """Create the de-identified file's row and enqueue its job; both commit or neither does.

    Raises ``FileNotReadyError`` when the source has no stored content (processing or failed).
    """
    # Audited against the file whose data is read (the source), naming the file it becomes.
    with operation(actor=actor, action=AuditLog.Action.ANONYMIZE, file_id=source.id) as op:
        _refuse_unless_ready(source)
        with transaction.atomic():
            derived = _derived_row(actor, source, options)
            derived.save(force_insert=True)
            task_queue.enqueue(task_queue.ANONYMIZE_FILE, str(derived.id))
            op.succeed(reason=f"queued as derived file {derived.id}")
    return derived


def request_anonymizations(
    *, actor: Actor, sources: list[DicomFile], options: DeidOptions
) -> list[DicomFile]:
    """:func:`request_anonymization` for many files in one request: the derived rows, their jobs (one
    per ``DICOM_ANONYMIZE_BATCH_JOB_SIZE`` files) and one audit row per source, all in one commit.

    Every source is checked before anything is written: one not ready raises ``FileNotReadyError``
    naming it, and nothing is left behind. A job's claim, start and result (three transactions) are
    shared by the files of its batch, as the request's authentication and audit commit are.
    """
    with operation(actor=actor, action=AuditLog.Action.ANONYMIZE) as op:
        for source in sources:
            _refuse_unless_ready(source)
        derived = [_derived_row(actor, source, options) for source in sources]
        with transaction.atomic():
            DicomFile.objects.bulk_create(derived)
            for batch in batched((str(row.id) for row in derived), settings.DICOM_ANONYMIZE_BATCH_JOB_SIZE):
                task_queue.enqueue(task_queue.ANONYMIZE_FILES, batch)
            record_many(
                entry(
                    actor=actor,
                    action=AuditLog.Action.ANONYMIZE,
                    success=True,
                    file_id=source.id,
                    status_code=200,
                    reason=f"queued as derived file {row.id} (one of {len(derived)} in one request)",
                )
                for source, row in zip(sources, derived, strict=True)
            )
            op.discard()  # the rows above, one per file, are this request's record
    return derived


def _refuse_unless_ready(source: DicomFile) -> None:
    if not source.is_ready:
        raise FileNotReadyError(
            f"file {source.id} is {source.status}: only a completed file can be anonymized"
        )


def _derived_row(actor: Actor, source: DicomFile, options: DeidOptions) -> DicomFile:
    """The de-identified file's row, ``processing`` until its job stores the output (not saved)."""
    return DicomFile(
        owner=actor.user if actor.user is not None and actor.user.is_authenticated else None,
        source=source,
        status=DicomFile.Status.PROCESSING,
        anonymized=True,
        study_type=source.study_type,
        deid_options=options.to_names(),
    )


def run_anonymizations(*, file_ids: list[str]) -> dict[str, int]:
    """The job of a batch: :func:`run_anonymization` for each file, in order; the statuses counted.

    A file that failed unexpectedly does not stop the others; the job then raises (naming how many,
    never why), so the worker tries it again, and the files already done are left alone.
    """
    counts: dict[str, int] = {}
    unexpected = 0
    for file_id in file_ids:
        try:
            status = run_anonymization(file_id=file_id)
        except Exception:  # logged by run_anonymization; tried again with the job
            unexpected += 1
            continue
        counts[status] = counts.get(status, 0) + 1
    if unexpected:
        raise BatchIncompleteError(f"{unexpected} of {len(file_ids)} files of the batch failed unexpectedly")
    return counts


class BatchIncompleteError(Exception):
    """Some files of a batch job failed for a reason that may pass (the message holds a count only)."""


def run_anonymization(*, file_id: uuid.UUID | str) -> str:
    """De-identify the source of ``file_id``, store the result and mark the row; return its status.

    A row that is no longer ``processing`` is left alone (the job already ran), and the output's
    key comes from the row's id, so a job taken up again after its worker died overwrites the
    same object and completes the row once. Input problems (``DicomServiceError``) end the row
    ``failed`` with their PHI-free detail; anything else is re-raised with the row still
    ``processing``: the worker tries the job again, and after ``DICOM_JOB_MAX_ATTEMPTS`` marks it
    failed (``dicom.services.jobs.retry_or_give_up``).
    """
    dicom_file = DicomFile.objects.select_related("source", "owner").filter(pk=file_id).first()
    if dicom_file is None or dicom_file.status != DicomFile.Status.PROCESSING:
        return dicom_file.status if dicom_file is not None else "missing"
    if settings.DICOM_TEST_JOB_DELAY_MS:
        time.sleep(settings.DICOM_TEST_JOB_DELAY_MS / 1000)
    key = storage.key_for(dicom_file.id)
    try:
        _produce(dicom_file, key)
    except DicomServiceError as error:
        # Where burned-in text was found (frame and box, never the text) stays on the failed row,
        # so the admin can show it over the source's preview.
        outcome = getattr(error, "outcome", None)
        _fail(dicom_file, error.detail, report={"pixel_text": outcome.to_dict()} if outcome else None)
        return DicomFile.Status.FAILED
    except Exception:
        logger.exception("anonymization job for file %s failed unexpectedly", dicom_file.id)
        storage.delete(key)
        raise
    return DicomFile.Status.COMPLETED


def give_up_anonymization(*, file_id: uuid.UUID | str, detail: str) -> None:
    """Mark the ``processing`` file ``file_id`` failed with ``detail``: its job will not run again."""
    dicom_file = DicomFile.objects.select_related("owner").filter(pk=file_id).first()
    if dicom_file is not None:
        _fail(dicom_file, detail)


def _give_up_job(args: list, detail: str) -> None:
    if args:
        give_up_anonymization(file_id=args[0], detail=detail)


task_queue.register_give_up(task_queue.ANONYMIZE_FILE, _give_up_job)


def _give_up_batch(args: list, detail: str) -> None:
    for file_id in args[0] if args else []:
        give_up_anonymization(file_id=file_id, detail=detail)


task_queue.register_give_up(task_queue.ANONYMIZE_FILES, _give_up_batch)


def _produce(dicom_file: DicomFile, key: str) -> None:
    source = dicom_file.source
    if source is None or not source.is_ready:
        raise FileNotReadyError("the source file is gone or has no stored content")
    options = DeidOptions.from_names(dicom_file.deid_options)
    # Local storage is read in place; a remote store (S3) is copied to staging first, since the
    # engine seeks in its source.
    local_source = storage.local_path(source.storage_key)
    staged_source = None if local_source is not None else storage.new_staging_path()
    produced = storage.new_staging_path()
    try:
        if staged_source is not None:
            with storage.open_stored(source.storage_key) as stored, open(staged_source, "wb") as copy:
                shutil.copyfileobj(stored, copy, 1024 * 1024)
        # The same validating walk as an upload: what the upload would refuse (a file cut short, an
        # odd length, a bad delimiter) is refused here too, whatever put it in storage.
        validate_staged(local_source or staged_source)
        dataset, report = deidentify_file(
            local_source or staged_source, produced, options=options, key=deid_key()
        )
        apply_header(dicom_file, extract_metadata(dataset))
        dicom_file.transfer_syntax_uid = str(dataset.file_meta.TransferSyntaxUID)
        dicom_file.deid_report = report.to_dict()
        stored = storage.store_staged_file(staged_path=produced, key=key)
    finally:
        if staged_source is not None:
            staged_source.unlink(missing_ok=True)
        produced.unlink(missing_ok=True)
    with transaction.atomic():
        updated = DicomFile.objects.filter(pk=dicom_file.pk, status=DicomFile.Status.PROCESSING).update(
            status=DicomFile.Status.COMPLETED,
            storage_key=stored.key,
            size=stored.size,
            sha256=stored.sha256,
            metadata=dicom_file.metadata,
            modality=dicom_file.modality,
            study_instance_uid=dicom_file.study_instance_uid,
            series_instance_uid=dicom_file.series_instance_uid,
            sop_instance_uid=dicom_file.sop_instance_uid,
            patient_id=dicom_file.patient_id,
            **{name: getattr(dicom_file, name) for name in INDEX_FIELDS},
            transfer_syntax_uid=dicom_file.transfer_syntax_uid,
            deid_report=dicom_file.deid_report,
            failure_detail="",
        )
        if updated:
            record_event(
                actor=_job_actor(dicom_file), action=AuditLog.Action.JOB, success=True, file_id=dicom_file.id
            )
            events.files_stored([dicom_file])


def _fail(dicom_file: DicomFile, detail: str, *, report: dict | None = None) -> None:
    with transaction.atomic():
        changes = {"status": DicomFile.Status.FAILED, "failure_detail": detail[:_DETAIL_MAX]}
        if report is not None:
            changes["deid_report"] = report
        updated = DicomFile.objects.filter(pk=dicom_file.pk, status=DicomFile.Status.PROCESSING).update(
            **changes
        )
        if updated:
            record_event(
                actor=_job_actor(dicom_file),
                action=AuditLog.Action.JOB,
                success=False,
                file_id=dicom_file.id,
                reason=detail,
            )
    logger.warning("anonymization of file %s failed: %s", dicom_file.id, detail)


def _job_actor(dicom_file: DicomFile) -> Actor:
    # The job acts for whoever asked for it (the derived file's owner).
    return Actor(user=dicom_file.owner)
