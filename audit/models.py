import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditLog(models.Model):
    """One action someone took (or tried) through the API, the admin, a command or the worker.

    Rows are append-only: nothing in the project updates or deletes them, the admin shows them
    read-only, and on PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE. Each row carries a
    hash over its fields and the previous row's hash (``audit.chain``), so an edit or a deletion
    made around the trigger is found by ``manage.py verify_audit``. The actor is kept as a foreign
    key without a database constraint (deleting a user changes no row: its id stays, pointing
    nowhere) and as a copied username, which is what the row says. ``reason`` is a short, PHI-free
    text (what went wrong, never a value). ``count`` is how many events the row stands for: 1,
    except for the refusals of unauthenticated requests, tallied per client address and minute.
    ``targets`` names the studies, series and instances a request touched when there are several
    (UIDs only, never a value read from a file).
    """

    class Action(models.TextChoices):
        UPLOAD = "upload", "Upload"
        METADATA = "metadata", "Metadata"
        ANONYMIZE = "anonymize", "Anonymize"
        DOWNLOAD = "download", "Download"
        STATUS = "status", "Status"
        SEARCH = "search", "Search"
        PREVIEW = "preview", "Preview"
        VIEW = "view", "View"
        BULK_ANONYMIZE = "bulk_anonymize", "Bulk anonymize"
        JOB = "job", "Background job"
        EXPORT = "export", "Export"
        LOGIN = "login", "Login"
        LOGOUT = "logout", "Logout"
        LOGIN_FAILED = "login_failed", "Failed login"

    id = models.BigAutoField(primary_key=True)
    timestamp = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="audit_logs",
    )
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    file_id = models.UUIDField(null=True, blank=True, db_index=True)
    success = models.BooleanField(db_index=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    request_id = models.UUIDField(default=uuid.uuid4, editable=False)
    count = models.PositiveIntegerField(default=1)
    # What a request touched beyond one file: "study:<uid>", "series:<uid>", "instance:<uid>" (the
    # DICOMweb and DIMSE entry points name every study, series or instance they answered with).
    targets = models.JSONField(default=list, blank=True, editable=False)
    prev_hash = models.CharField(max_length=64, editable=False)
    row_hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [models.Index(fields=["user", "timestamp"])]

    def __str__(self) -> str:
        outcome = "ok" if self.success else "failed"
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {outcome}"


class RefusalTally(models.Model):
    """Refusals of unauthenticated requests from one address in one minute, not yet in the trail.

    A flood of requests without valid credentials would otherwise add a row each. They are counted
    here instead and written to the trail as one row per address, action and minute, with the
    count, once the minute is over (``audit.services.flush_tallies``). Not part of the chain:
    these rows are updated and deleted.
    """

    # Text, "" when unknown: one unique key for every address, the unknown one included.
    client_address = models.CharField(max_length=45, blank=True)
    action = models.CharField(max_length=32, choices=AuditLog.Action.choices)
    minute = models.DateTimeField(db_index=True)
    count = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["client_address", "action", "minute"],
                name="audit_tally_one_per_address_action_minute",
            )
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.client_address or '-'} {self.action} x{self.count}"
