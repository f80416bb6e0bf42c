"""Stored objects whose row never committed are removed once old enough; everything with a row stays."""

import os
import time
import uuid

import pytest
from django.core.files.storage import default_storage

from dicom.services import storage
from dicom.services.orphans import sweep_orphaned_objects
from dicom.tests.factories import DicomFileFactory
from dicom.tests.services.test_storage_s3 import keys, s3_bucket  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def _store(file_id: uuid.UUID) -> list[str]:
    written = [storage.key_for(file_id), storage.preview_key_for(file_id, variant="thumb")]
    for key in written:
        storage.store_bytes(data=b"DICM patient data", key=key)
    return written


def _age(storage_root, key: str, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(storage_root / key, (past, past))


def test_only_old_objects_without_a_row_go(storage_root, settings):
    kept_row = DicomFileFactory()
    with_row = _store(kept_row.id)
    old_orphan = _store(uuid.uuid4())
    fresh_orphan = _store(uuid.uuid4())
    for key in (*with_row, *old_orphan):
        _age(storage_root, key, 7200)
    assert sweep_orphaned_objects(older_than_seconds=settings.DICOM_STAGING_MAX_AGE_SECONDS) == 2
    assert not any(default_storage.exists(key) for key in old_orphan)
    assert all(default_storage.exists(key) for key in (*with_row, *fresh_orphan))


def test_an_empty_store_is_swept_without_error(storage_root):
    assert sweep_orphaned_objects(older_than_seconds=0) == 0


def test_orphans_in_s3_are_found_and_removed(s3_bucket):  # noqa: F811
    row = DicomFileFactory()
    with_row = _store(row.id)
    _store(uuid.uuid4())
    # S3 cannot backdate an object: a bound in the future makes every object old enough.
    assert sweep_orphaned_objects(older_than_seconds=-60) == 2
    assert keys(s3_bucket) == sorted(with_row)
