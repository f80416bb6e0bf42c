"""With DICOM_FSYNC (the default) a stored file, its directory entry and its row are on disk when
the service says so; without it, nothing is flushed."""

import os
import uuid

import pytest
from django.db import connection

from dicom.services import storage


@pytest.fixture
def synced(monkeypatch):
    """The paths os.fsync was called on, in order, with each rename between them."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, destination):
        events.append(("rename", str(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_a_stored_file_is_flushed_before_its_rename_and_its_new_folders_after(storage_root, synced):
    staged = storage.new_staging_path()
    staged.write_bytes(b"DICM bytes")
    key = storage.key_for(uuid.uuid4())
    destination = storage.local_path(key)

    storage.store_staged_file(staged_path=staged, key=key)

    shard, top = destination.parent, destination.parent.parent
    assert synced == [
        ("fsync", str(staged)),
        ("rename", str(destination)),
        ("fsync", str(shard)),
        ("fsync", str(top)),  # the shard folder was new: the entry naming it too
        ("fsync", str(top.parent)),  # and so was dicom/ itself in a fresh storage root
    ]
    assert destination.read_bytes() == b"DICM bytes"


def test_a_second_file_in_the_same_folder_flushes_only_that_folder(storage_root, synced):
    first = uuid.uuid4()
    neighbour = uuid.UUID(str(first)[:2] + str(uuid.uuid4())[2:])  # the same shard folder
    for file_id in (first, neighbour):
        staged = storage.new_staging_path()
        staged.write_bytes(b"DICM")
        storage.store_staged_file(staged_path=staged, key=storage.key_for(file_id))
    destination = storage.local_path(storage.key_for(neighbour))
    assert synced[-2:] == [("rename", str(destination)), ("fsync", str(destination.parent))]
    assert synced[-3][0] == "fsync" and len(synced) == 5 + 3


def test_without_fsync_nothing_is_flushed(storage_root, synced, settings):
    settings.DICOM_FSYNC = False
    staged = storage.new_staging_path()
    staged.write_bytes(b"DICM")
    storage.store_staged_file(staged_path=staged, key=storage.key_for(uuid.uuid4()))
    assert [event for event, _ in synced] == ["rename"]


@pytest.mark.django_db
def test_the_database_commits_durably_whatever_the_servers_default():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # make test's PostgreSQL runs with synchronous_commit=off; the service's sessions do not.
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
        else:
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone()[0] == 2  # FULL
