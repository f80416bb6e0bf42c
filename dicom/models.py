import uuid

from django.conf import settings
from django.db import models


class DicomFile(models.Model):
    """One stored DICOM instance: an upload as received, or a de-identified file derived from one.

    The bytes live in the default storage under ``storage_key`` (made by the service from the id,
    never from a client's filename or a DICOM value). ``metadata`` is the flat object the API
    returns; for a de-identified file it was read from the de-identified dataset, so it holds no
    original patient data. ``source`` links a derived file to the file it was made from.
    """

    class Status(models.TextChoices):
        PROCESSING = "processing", "Processing"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="dicom_files",
    )
    source = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="derived_files",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROCESSING, db_index=True)
    failure_detail = models.CharField(max_length=500, blank=True)
    anonymized = models.BooleanField(default=False, db_index=True)
    study_type = models.CharField(max_length=32, default="general", db_index=True)
    deid_options = models.JSONField(default=list, blank=True)
    deid_report = models.JSONField(default=dict, blank=True)
    storage_key = models.CharField(max_length=255, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64, blank=True)
    modality = models.CharField(max_length=16, blank=True, db_index=True)
    study_instance_uid = models.CharField(max_length=64, blank=True, db_index=True)
    series_instance_uid = models.CharField(max_length=64, blank=True, db_index=True)
    sop_instance_uid = models.CharField(max_length=64, blank=True, db_index=True)
    patient_id = models.CharField(max_length=64, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    preview_key = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("view_phi", "Can see patient data of files that are not de-identified")]
        indexes = [models.Index(fields=["owner", "created_at"])]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.COMPLETED and bool(self.storage_key)
