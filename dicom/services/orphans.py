"""Stored objects whose file row never committed: removed once they are old enough to be sure.

An upload stores its object and then commits its row; a process killed between the two (a few
milliseconds) leaves an object, possibly an original with patient data, that no row names. The
same holds for a bulk run's output stored before its batch was recorded. Nothing else reads such
an object, so once it is older than ``DICOM_STAGING_MAX_AGE_SECONDS`` (no live request or batch
takes that long between storing and committing) it is deleted, with its previews.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from dicom.models import DicomFile
from dicom.services import storage

logger = logging.getLogger(__name__)

_BATCH = 500


def sweep_orphaned_objects(*, older_than_seconds: float) -> int:
    """Delete stored objects without a file row, last written more than ``older_than_seconds`` ago.

    Lists the service's keys (``storage.iter_keys``), looks their file ids up in batches, and
    deletes those whose row does not exist. Returns how many objects were deleted.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    removed = 0
    batch: list[tuple[str, object]] = []

    def flush() -> int:
        ids = {file_id for _, file_id in batch}
        known = set(DicomFile.objects.filter(pk__in=ids).values_list("pk", flat=True))
        deleted = 0
        for key, file_id in batch:
            if file_id not in known and storage.modified_at(key) <= cutoff:
                storage.delete(key)
                deleted += 1
        batch.clear()
        return deleted

    for key, file_id in storage.iter_keys():
        batch.append((key, file_id))
        if len(batch) >= _BATCH:
            removed += flush()
    removed += flush()
    if removed:
        logger.warning("removed %d stored object(s) without a file row", removed)
    return removed
