"""The DICOM application entities (AEs) the DIMSE node talks to, and where it forwards files."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def validate_ae_title(value: str) -> None:
    """An AE title (PS3.5 6.2, VR AE): 1 to 16 characters, no backslash, no control characters,
    not only spaces (leading and trailing spaces are not significant and are not stored)."""
    if not value.strip():
        raise ValidationError("an AE title cannot be empty or only spaces")
    if value != value.strip():
        raise ValidationError("an AE title is stored without leading or trailing spaces")
    if len(value) > 16:
        raise ValidationError("an AE title has at most 16 characters")
    if "\\" in value or any(ord(char) < 0x20 or ord(char) > 0x7E for char in value):
        raise ValidationError("an AE title holds printable ASCII characters other than backslash")


class ApplicationEntity(models.Model):
    """A remote DICOM node (modality, PACS, workstation) known by its AE title.

    An association whose calling AE title is an enabled entity acts as the entity's ``account``
    (its files are that account's, its audit rows name it); ``may_store`` allows C-STORE,
    ``may_query`` C-FIND and ``may_retrieve`` C-MOVE and C-GET. ``host`` and ``port`` are where
    the entity listens: an enabled entity with both is a C-MOVE destination.
    """

    ae_title = models.CharField("AE title", max_length=16, unique=True, validators=[validate_ae_title])
    description = models.CharField(max_length=255, blank=True)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="application_entities",
        help_text="the service account this AE acts as",
    )
    may_store = models.BooleanField(default=False)
    may_query = models.BooleanField(default=False)
    may_retrieve = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "application entity"
        verbose_name_plural = "application entities"
        ordering = ["ae_title"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port__isnull=True) | models.Q(port__gte=1, port__lte=65535),
                name="dimse_ae_port_range",
            )
        ]

    def __str__(self) -> str:
        return self.ae_title


class Destination(models.Model):
    """Where forwarded files go: a DICOM AE (C-STORE to an application entity's host and port) or a
    DICOMweb server (STOW-RS to ``{url}/studies``).

    ``authorization`` is the ``Authorization`` header sent to a DICOMweb server (``Bearer ...``,
    ``Token ...``): a secret, never logged, audited or shown back in the admin.
    """

    class Kind(models.TextChoices):
        DIMSE = "dimse", "DICOM AE (C-STORE)"
        DICOMWEB = "dicomweb", "DICOMweb server (STOW-RS)"

    name = models.SlugField(max_length=64, unique=True, help_text="how rules, the API and the audit name it")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    application_entity = models.ForeignKey(
        ApplicationEntity,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="destinations",
        help_text="C-STORE: the AE called (its AE title, host and port)",
    )
    url = models.URLField(
        "base URL",
        max_length=500,
        blank=True,
        help_text="STOW-RS: the DICOMweb root, e.g. https://host/dicomweb",
    )
    authorization = models.CharField(
        max_length=1000, blank=True, help_text="STOW-RS: the Authorization header's value (a secret)"
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(kind="dimse", application_entity__isnull=False)
                    | (models.Q(kind="dicomweb", application_entity__isnull=True) & ~models.Q(url=""))
                ),
                name="dimse_destination_kind_target",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.kind == self.Kind.DIMSE:
            entity = self.application_entity
            if entity is None:
                raise ValidationError(
                    {"application_entity": "a C-STORE destination needs an application entity"}
                )
            if not entity.host or not entity.port:
                raise ValidationError({"application_entity": "this application entity has no host and port"})
        elif self.kind == self.Kind.DICOMWEB:
            if not self.url:
                raise ValidationError({"url": "a DICOMweb destination needs its base URL"})
            parts = urlsplit(self.url)
            if parts.username or parts.password:
                # The URL is shown in lists and pages; a credential belongs in the write-only field.
                raise ValidationError({"url": "credentials go in the authorization field, not in the URL"})
            if self.application_entity_id is not None:
                raise ValidationError(
                    {"application_entity": "a DICOMweb destination has no application entity"}
                )

    @property
    def target(self) -> str:
        """What the destination is, without secrets: the called AE title, or the URL's scheme and host."""
        if self.kind == self.Kind.DIMSE:
            return f"C-STORE {self.application_entity.ae_title}" if self.application_entity else "C-STORE"
        return f"STOW-RS {urlsplit(self.url).hostname or ''}".strip()


class ForwardingRule(models.Model):
    """When a stored file is sent to a destination: after it was stored on one of our AE titles
    (``received``, any file stored through that called AE), or after a de-identified file was
    completed (``deidentified``, whatever the entry point: upload, STOW-RS, C-STORE on the
    de-identifying AE, anonymize job, bulk run). A ``deidentified`` rule never sends an original."""

    class Trigger(models.TextChoices):
        RECEIVED = "received", "Stored on a called AE title"
        DEIDENTIFIED = "deidentified", "De-identified (any entry point)"

    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    called_ae_title = models.CharField(
        "called AE title",
        max_length=16,
        blank=True,
        help_text="for 'stored on a called AE title': DICOM_SCP_AE_TITLE or DICOM_SCP_DEID_AE_TITLE",
    )
    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="rules")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["destination__name", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(trigger="received", called_ae_title__gt="")
                | models.Q(trigger="deidentified", called_ae_title=""),
                name="dimse_rule_called_ae_with_received",
            ),
            models.UniqueConstraint(
                fields=["trigger", "called_ae_title", "destination"], name="dimse_rule_unique"
            ),
        ]

    def __str__(self) -> str:
        if self.trigger == self.Trigger.RECEIVED:
            return f"stored on {self.called_ae_title} -> {self.destination}"
        return f"de-identified -> {self.destination}"

    def clean(self) -> None:
        ours = (settings.DICOM_SCP_AE_TITLE, settings.DICOM_SCP_DEID_AE_TITLE)
        if self.trigger == self.Trigger.RECEIVED and self.called_ae_title not in ours:
            raise ValidationError({"called_ae_title": f"one of this node's AE titles: {', '.join(ours)}"})
        if self.trigger == self.Trigger.DEIDENTIFIED and self.called_ae_title:
            raise ValidationError({"called_ae_title": "a de-identification rule names no AE title"})


class Transfer(models.Model):
    """One send of one stored file to one destination, done by one background job.

    ``status`` is ``queued`` until the job sent it (``sent``) or it finally failed (``failed``, with
    a PHI-free ``detail``: a status code, never a value). At most one transfer of a file to a
    destination is queued at a time; a manual send of a file already sent makes a new row.
    ``trigger`` says why it was made (a rule's trigger, or ``manual``); a ``deidentified`` transfer
    never sends an original, checked again when it is sent.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        RECEIVED = "received", "Stored on a called AE title"
        DEIDENTIFIED = "deidentified", "De-identified"
        MANUAL = "manual", "Manual send"

    id = models.BigAutoField(primary_key=True)
    file = models.ForeignKey("dicom.DicomFile", on_delete=models.CASCADE, related_name="transfers")
    destination = models.ForeignKey(Destination, on_delete=models.PROTECT, related_name="transfers")
    rule = models.ForeignKey(
        ForwardingRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="transfers"
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="transfers"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    detail = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    job_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["file", "destination"],
                condition=models.Q(status="queued"),
                name="dimse_transfer_one_queued_per_file_destination",
            )
        ]

    def __str__(self) -> str:
        return f"transfer {self.pk} ({self.status})"
