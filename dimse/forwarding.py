"""Forwarding, the gateway role: stored files sent on to destinations, one background job per send.

- :func:`files_stored`: the listener of ``dicom.services.events`` (registered by ``DimseConfig``),
  called inside the transaction that commits stored files. The enabled :class:`ForwardingRule` rows
  of enabled destinations that match (:func:`rule_matches`) each get a :class:`Transfer` and its job,
  in that same transaction: a rolled-back store queues nothing, a committed one cannot lose its sends.
- :func:`request_send`: a manual send (API, admin) of files the user may see, originals only with
  the patient-data permission (``dicom.access``, the download's rule); audited as one ``export``.
- :func:`run_transfer`: the job's body. A transfer no longer ``queued`` is left alone (the job was
  delivered again), so a file is sent once per transfer. A send that failed raises
  :class:`ForwardFailedError`: the worker tries the job again after a delay, and at
  ``DICOM_JOB_MAX_ATTEMPTS`` gives it up (:func:`give_up_transfer`). Each sent or finally failed
  transfer writes one ``job`` audit row naming the destination and the job.

A worker killed after the peer stored the file and before the row said ``sent`` sends it again when
the job is taken back: receivers treat a second C-STORE or STOW-RS of one SOP instance as a repeat.
Nothing here logs, audits or raises a value read from a file; the destination's authorization
header is never written anywhere but the request.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.models import AuditLog
from audit.services import Actor, operation, record_event
from dicom import access
from dicom.models import DicomFile
from dicom.services import storage, task_queue
from dicom.services.errors import AccessRefusedError, DicomServiceError, FileNotReadyError
from dicom.services.selectors import get_visible_file
from dimse import scu, stow_client
from dimse.models import Destination, ForwardingRule, Transfer

logger = logging.getLogger(__name__)

FORWARD_TRANSFER = "dimse.tasks.forward_transfer_task"
MAX_FILES_PER_REQUEST = 1000
_DETAIL_MAX = Transfer._meta.get_field("detail").max_length


class ForwardFailedError(Exception):
    """Raised by the job when a send failed, so the worker tries it again (the detail is PHI-free)."""


class UnknownDestinationError(DicomServiceError):
    status_code = 400


class DestinationDisabledError(DicomServiceError):
    status_code = 409


# --- rules --------------------------------------------------------------------------------------


def rule_matches(rule: ForwardingRule, *, dicom_file: DicomFile, called_ae: str) -> bool:
    """Whether ``rule`` sends ``dicom_file``, stored through our AE title ``called_ae`` ("" if not C-STORE).

    A de-identification rule matches de-identified files only: an original never goes out by it.
    """
    if not rule.enabled:
        return False
    if rule.trigger == ForwardingRule.Trigger.DEIDENTIFIED:
        return dicom_file.anonymized
    return bool(called_ae) and rule.called_ae_title == called_ae


# Every stored file asks for the rules: one read per process every this many seconds, not one per
# file (a C-STORE spent an eighth of its time on it). A rule or destination saved or deleted in this
# process is seen at once; in other processes within this time. A send checks its destination again.
RULES_CACHE_SECONDS = 2.0
_rules_read: tuple[float, list[ForwardingRule]] | None = None


def enabled_rules() -> list[ForwardingRule]:
    """The enabled rules of enabled destinations, in order (read again after :data:`RULES_CACHE_SECONDS`)."""
    global _rules_read
    read = _rules_read
    if read is None or time.monotonic() - read[0] > RULES_CACHE_SECONDS:
        rules = list(
            ForwardingRule.objects.filter(enabled=True, destination__enabled=True)
            .select_related("destination")
            .order_by("pk")
        )
        read = _rules_read = (time.monotonic(), rules)
    return read[1]


def forget_rules(**_) -> None:
    """Signal receiver: a rule or destination changed here; read the rules again at the next file."""
    global _rules_read
    _rules_read = None


def files_stored(files: Sequence[DicomFile], called_ae: str) -> None:
    """Queue a transfer per file and matching destination (one per destination, the first rule's)."""
    rules = enabled_rules()
    if not rules:
        return
    for dicom_file in files:
        chosen: dict[int, ForwardingRule] = {}
        for rule in rules:
            if rule.destination_id not in chosen and rule_matches(
                rule, dicom_file=dicom_file, called_ae=called_ae
            ):
                chosen[rule.destination_id] = rule
        for rule in chosen.values():
            transfer = queue_transfer(
                dicom_file=dicom_file, destination=rule.destination, trigger=rule.trigger, rule=rule
            )
            logger.info(
                "file %s: transfer %s to destination %s queued by rule %s",
                dicom_file.pk,
                transfer.pk,
                rule.destination.name,
                rule.pk,
            )


def queue_transfer(
    *,
    dicom_file: DicomFile,
    destination: Destination,
    trigger: str,
    rule: ForwardingRule | None = None,
    requested_by: AbstractBaseUser | None = None,
) -> Transfer:
    """The queued transfer of ``dicom_file`` to ``destination``: the one already queued, or a new one
    with its job. Call inside the caller's transaction (the job row commits with it)."""
    existing = Transfer.objects.filter(
        file_id=dicom_file.pk, destination=destination, status=Transfer.Status.QUEUED
    ).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            transfer = Transfer.objects.create(
                file_id=dicom_file.pk,
                destination=destination,
                rule=rule,
                trigger=trigger,
                requested_by=requested_by
                if requested_by is not None and requested_by.is_authenticated
                else None,
            )
            transfer.job_id = uuid.UUID(task_queue.enqueue(FORWARD_TRANSFER, transfer.pk))
            transfer.save(update_fields=["job_id"])
    except IntegrityError:
        # Queued by another request in between (one queued transfer per file and destination).
        return Transfer.objects.get(
            file_id=dicom_file.pk, destination=destination, status=Transfer.Status.QUEUED
        )
    return transfer


# --- manual sends -------------------------------------------------------------------------------


def find_destination(reference: str) -> Destination:
    """The destination named ``reference`` (or with that id); ``UnknownDestinationError`` if none,
    ``DestinationDisabledError`` if it is disabled."""
    reference = str(reference).strip()
    lookup = Q(name=reference)
    if reference.isdigit():
        lookup |= Q(pk=int(reference))
    destination = Destination.objects.select_related("application_entity").filter(lookup).first()
    if destination is None:
        raise UnknownDestinationError("unknown destination: no destination has this name or id")
    if not destination.enabled:
        raise DestinationDisabledError(f"destination {destination.name} is disabled")
    return destination


@dataclass(frozen=True)
class SendRequest:
    """A manual send: the files (ids as the client sent them) and the destination (name or id)."""

    file_ids: Sequence[str | uuid.UUID]
    destination: str


def request_send(*, actor: Actor, request: SendRequest) -> list[Transfer]:
    """Queue a transfer (and its job) of each file to the destination; all of them or none.

    Raises ``FileNotFoundInServiceError`` (404) for a file the user may not see or that does not
    exist, ``AccessRefusedError`` (403) for an original without the patient-data permission,
    ``FileNotReadyError`` (409) for a file without stored content, ``UnknownDestinationError`` (400)
    or ``DestinationDisabledError`` (409). Audited as one ``export`` operation naming the destination.
    """
    user = actor.user
    with operation(actor=actor, action=AuditLog.Action.EXPORT) as op:
        if not request.file_ids or len(request.file_ids) > MAX_FILES_PER_REQUEST:
            raise DicomServiceError(f"send between 1 and {MAX_FILES_PER_REQUEST} files at once")
        files = []
        for file_id in dict.fromkeys(str(file_id) for file_id in request.file_ids):
            dicom_file = get_visible_file(user=user, file_id=file_id)
            if not access.may_see_patient_data(user, dicom_file):
                raise AccessRefusedError(
                    f"file {dicom_file.id} is an original with patient data: sending it needs the patient "
                    "data permission (dicom.view_phi)"
                )
            if not dicom_file.is_ready:
                raise FileNotReadyError(f"file {dicom_file.id} is {dicom_file.status}: nothing to send")
            files.append(dicom_file)
        destination = find_destination(request.destination)
        if len(files) == 1:
            op.file_id = files[0].id
        op.touch(instances=[f.sop_instance_uid for f in files if f.sop_instance_uid])
        with transaction.atomic():
            transfers = [
                queue_transfer(
                    dicom_file=dicom_file,
                    destination=destination,
                    trigger=Transfer.Trigger.MANUAL,
                    requested_by=user,
                )
                for dicom_file in files
            ]
            op.succeed(
                reason=f"send of {len(files)} file(s) to destination {destination.name} ({destination.target}) queued"
            )
    return transfers


# --- the job ------------------------------------------------------------------------------------


def run_transfer(*, transfer_id: int) -> str:
    """Send the file of the queued transfer ``transfer_id``; return the transfer's status.

    A transfer that is missing or no longer ``queued`` is left alone. A destination disabled since,
    a file without stored content, or an original under a de-identification rule fail the transfer
    at once (no retry). A send that failed records its detail and raises ``ForwardFailedError``.
    """
    transfer = _transfer(transfer_id)
    if transfer is None or transfer.status != Transfer.Status.QUEUED:
        return transfer.status if transfer is not None else "missing"
    Transfer.objects.filter(pk=transfer.pk).update(attempts=F("attempts") + 1)
    transfer.attempts += 1
    problem = _refusal(transfer)
    if problem:
        finish_transfer(transfer, sent=False, detail=problem)
        return Transfer.Status.FAILED
    try:
        with storage.open_stored(transfer.file.storage_key) as stored:
            detail = _send(transfer.destination, stored)
    except (scu.SendError, OSError) as error:
        detail = (
            error.detail
            if isinstance(error, DicomServiceError)
            else f"reading the stored file failed ({type(error).__name__})"
        )
        Transfer.objects.filter(pk=transfer.pk, status=Transfer.Status.QUEUED).update(
            detail=detail[:_DETAIL_MAX]
        )
        logger.warning(
            "transfer %s of file %s to destination %s failed (attempt %s): %s",
            transfer.pk,
            transfer.file_id,
            transfer.destination.name,
            transfer.attempts,
            detail,
        )
        raise ForwardFailedError(detail) from None
    finish_transfer(transfer, sent=True, detail=detail)
    logger.info(
        "transfer %s of file %s sent to destination %s",
        transfer.pk,
        transfer.file_id,
        transfer.destination.name,
    )
    return Transfer.Status.SENT


def give_up_transfer(*, transfer_id: int, detail: str) -> None:
    """Fail the queued transfer ``transfer_id`` (its job will not run again): its last error and ``detail``."""
    transfer = _transfer(transfer_id)
    if transfer is None or transfer.status != Transfer.Status.QUEUED:
        return
    finish_transfer(
        transfer, sent=False, detail=f"{transfer.detail} ({detail})" if transfer.detail else detail
    )


def _give_up_job(args: list, detail: str) -> None:
    if args:
        give_up_transfer(transfer_id=args[0], detail=detail)


task_queue.register_give_up(FORWARD_TRANSFER, _give_up_job)


def finish_transfer(transfer: Transfer, *, sent: bool, detail: str) -> bool:
    """Mark the queued ``transfer`` sent or failed, with its one ``job`` audit row; False if it was not queued."""
    status = Transfer.Status.SENT if sent else Transfer.Status.FAILED
    destination = transfer.destination
    # The job acts for whoever asked: the manual sender, else the file's owner (as the anonymize job).
    actor = Actor(user=transfer.requested_by or transfer.file.owner)
    reason = (
        f"{'sent' if sent else 'not sent'} to destination {destination.name} ({destination.target}), "
        f"transfer {transfer.pk}, job {transfer.job_id}: {detail}"
    )
    with operation(actor=actor, action=AuditLog.Action.JOB, file_id=transfer.file_id) as op:
        if transfer.file.sop_instance_uid:
            op.touch(instances=[transfer.file.sop_instance_uid])
        with transaction.atomic():
            updated = Transfer.objects.filter(pk=transfer.pk, status=Transfer.Status.QUEUED).update(
                status=status,
                detail=detail[:_DETAIL_MAX],
                sent_at=timezone.now() if sent else None,
                updated_at=timezone.now(),
            )
            if not updated:
                op.discard()
                return False
            if sent:
                op.succeed(reason=reason)
            else:
                # In the transaction, as the success row (an operation's failure row comes after
                # its block, and goes to the tallies for an actor without a user).
                record_event(
                    actor=actor,
                    action=AuditLog.Action.JOB,
                    success=False,
                    file_id=transfer.file_id,
                    status_code=502,
                    reason=reason,
                    targets=op.targets,
                )
                op.discard()
    if not sent:
        logger.warning(
            "transfer %s of file %s to destination %s failed: %s",
            transfer.pk,
            transfer.file_id,
            destination.name,
            detail,
        )
    transfer.status, transfer.detail = status, detail[:_DETAIL_MAX]
    return True


def _transfer(transfer_id: int) -> Transfer | None:
    return (
        Transfer.objects.select_related(
            "file", "file__owner", "destination", "destination__application_entity", "requested_by"
        )
        .filter(pk=transfer_id)
        .first()
    )


def _refusal(transfer: Transfer) -> str:
    """Why ``transfer`` cannot be sent at all (no retry would help), or ""."""
    dicom_file, destination = transfer.file, transfer.destination
    if not destination.enabled:
        return f"destination {destination.name} is disabled"
    if not dicom_file.is_ready:
        return f"the file is {dicom_file.status}: nothing to send"
    if transfer.trigger == Transfer.Trigger.DEIDENTIFIED and not dicom_file.anonymized:
        return "refused: a de-identification rule never sends an original"
    if destination.kind == Destination.Kind.DIMSE:
        entity = destination.application_entity
        if entity is None or not entity.host or not entity.port:
            return f"destination {destination.name}: its application entity has no host and port"
    return ""


def _send(destination: Destination, stored) -> str:
    """Send the stored file ``stored`` (a storage ``File``); what the peer answered (PHI-free), or ``SendError``."""
    if destination.kind == Destination.Kind.DIMSE:
        entity = destination.application_entity
        status = scu.send_c_store(
            source=stored,
            target=scu.StoreTarget(ae_title=entity.ae_title, host=entity.host, port=entity.port),
        )
        return f"C-STORE status 0x{status:04X}"
    status = stow_client.send_stow(
        source=stored, size=stored.size, url=destination.url, authorization=destination.authorization
    )
    return f"STOW-RS HTTP {status}"
