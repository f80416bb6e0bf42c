import uuid

from django.conf import settings
from django.db import models


class AuditLog(models.Model):
    """One action someone took (or tried) through the API, the admin, a command or the worker.

    Rows are append-only: nothing in the project updates or deletes them, and the admin shows them
    read-only. The actor is kept as a foreign key without a database constraint (deleting a user
    changes no row: its id stays, pointing nowhere) and as a copied username, which is what the row says. ``reason`` is a short, PHI-free text (what went wrong, never a value).
    """

    class Action(models.TextChoices):
        UPLOAD = "upload", "Upload"
        METADATA = "metadata", "Metadata"
        ANONYMIZE = "anonymize", "Anonymize"
        DOWNLOAD = "download", "Download"
        STATUS = "status", "Status"
        PREVIEW = "preview", "Preview"
        VIEW = "view", "View"
        BULK_ANONYMIZE = "bulk_anonymize", "Bulk anonymize"
        JOB = "job", "Background job"
        EXPORT = "export", "Export"
        LOGIN = "login", "Login"
        LOGOUT = "logout", "Logout"
        LOGIN_FAILED = "login_failed", "Failed login"

    id = models.BigAutoField(primary_key=True)
    timestamp = models.DateTimeField(auto_now_add=True, db_index=True)
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

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [models.Index(fields=["user", "timestamp"])]

    def __str__(self) -> str:
        outcome = "ok" if self.success else "failed"
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {outcome}"
