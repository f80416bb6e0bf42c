"""Staged files left by requests and jobs that died are removed; live ones stay."""

import os
import time

import pytest
from django.core.management import call_command

from dicom.services import storage


@pytest.fixture
def staged(storage_root):
    old, fresh = storage.new_staging_path(), storage.new_staging_path()
    old.write_bytes(b"partial original")
    fresh.write_bytes(b"upload in flight")
    past = time.time() - 7200
    os.utime(old, (past, past))
    return old, fresh


def test_the_sweep_removes_only_files_older_than_the_bound(staged, settings):
    old, fresh = staged
    assert storage.sweep_staging(older_than_seconds=settings.DICOM_STAGING_MAX_AGE_SECONDS) == 1
    assert not old.exists() and fresh.exists()


def test_the_command_removes_everything_with_all(staged, capsys):
    call_command("sweep_staging", "--all")
    assert not any(path.exists() for path in staged)
    assert "removed 2 staged file(s)" in capsys.readouterr().out


def test_the_files_of_a_process_that_exited_go_at_once_whatever_their_age(staged):
    mine = storage.new_staging_path()
    assert mine.name.startswith(f"p{os.getpid()}-")
    dead = storage.staging_dir() / "p999999999-abc.part"
    dead.write_bytes(b"partial original of a killed worker")
    assert storage.sweep_staging_of_process(pid=999999999) == 1
    assert not dead.exists()
    assert all(path.exists() for path in (*staged, mine))
