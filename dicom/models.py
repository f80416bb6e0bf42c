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
    # The search index (QIDO-RS, C-FIND): header values as typed columns, filled with the metadata
    # by ``apply_header``. For a de-identified file they are the de-identified values. Some
    # (referring physician, study ID, performed procedure step start) are kept here only: the API's
    # metadata object has a fixed set of keys.
    patient_name = models.CharField(max_length=400, blank=True, db_index=True)
    referring_physician_name = models.CharField(max_length=400, blank=True)
    accession_number = models.CharField(max_length=64, blank=True, db_index=True)
    study_id = models.CharField(max_length=64, blank=True)
    study_date = models.DateField(null=True, blank=True, db_index=True)
    study_time = models.TimeField(null=True, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    instance_number = models.IntegerField(null=True, blank=True)
    sop_class_uid = models.CharField(max_length=64, blank=True)
    performed_procedure_step_start_date = models.DateField(null=True, blank=True)
    performed_procedure_step_start_time = models.TimeField(null=True, blank=True)
    preview_key = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("view_phi", "Can see patient data of files that are not de-identified"),
            ("operate", "Can queue de-identification of any user's files"),
        ]
        indexes = [
            models.Index(fields=["owner", "created_at"]),
            # Search pages walk the instances in UID order, one level at a time.
            models.Index(
                fields=["study_instance_uid", "series_instance_uid", "sop_instance_uid"],
                name="dicom_file_uid_path",
            ),
            # ModalitiesInStudy: the studies that have a modality, from the index alone.
            models.Index(fields=["modality", "study_instance_uid"], name="dicom_file_modality_study"),
        ]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.COMPLETED and bool(self.storage_key)


class BulkRun(models.Model):
    """One bulk de-identification asked for by an operator: a selection of sources plus options.

    ``fingerprint`` is a digest of the source, the selection and the options, so running the same
    command again finds this run and skips what it already did. The counts are refreshed from the
    items whenever the command reports; the items are the truth.
    """

    class Source(models.TextChoices):
        STORED = "stored", "Stored files"
        DIRECTORY = "directory", "Directory tree"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    fingerprint = models.CharField(max_length=64, unique=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    selection = models.JSONField(default=dict, blank=True)
    deid_options = models.JSONField(default=list, blank=True)
    operator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="bulk_runs"
    )
    operator_name = models.CharField(max_length=150, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    not_dicom = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"bulk run {self.id} ({self.source})"


class BulkItem(models.Model):
    """One source of a bulk run (a stored file or a path under the directory) and what became of it.

    ``output_id`` is chosen when the item is created, before any work: the stored output's id and
    storage key (or, with an output directory, the id its audit row names) derive from it, so
    doing the item again after a crash overwrites the same output instead of making a second one.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        QUEUED = "queued", "Queued"
        DONE = "done", "Done"
        REFUSED = "refused", "Refused"
        FAILED = "failed", "Failed"
        NOT_DICOM = "not_dicom", "Not DICOM"

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(BulkRun, on_delete=models.CASCADE, related_name="items")
    source_path = models.CharField(max_length=1024, blank=True)
    source_file = models.ForeignKey(
        DicomFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="bulk_items"
    )
    output_id = models.UUIDField(default=uuid.uuid4, unique=True)
    output_path = models.CharField(max_length=1024, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    detail = models.CharField(max_length=255, blank=True)
    task_id = models.UUIDField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["run", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "source_path"],
                condition=~models.Q(source_path=""),
                name="bulk_item_unique_path",
            ),
            models.UniqueConstraint(
                fields=["run", "source_file"],
                condition=models.Q(source_file__isnull=False),
                name="bulk_item_unique_file",
            ),
        ]

    def __str__(self) -> str:
        return f"bulk item {self.id} ({self.status})"


class WorkerHeartbeat(models.Model):
    """A live ``db_worker`` process: it refreshes ``last_seen`` while it runs, jobs included.

    The reaper treats the RUNNING jobs of a worker whose heartbeat is stale as abandoned (the
    process was killed or its machine died) and hands them back to the queue.
    """

    worker_id = models.CharField(max_length=64, primary_key=True)
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"worker {self.worker_id}"
