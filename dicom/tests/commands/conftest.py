"""Fixtures of the command tests: DICOM trees, stored originals, and real subprocesses on the test database."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from audit.services import Actor
from dicom.services.deid import DeidOptions
from dicom.services.ingest import IngestRequest, ingest_file

PROJECT = Path(__file__).resolve().parents[3]
SOURCES = {"CT": get_testdata_file("CT_small.dcm"), "MR": get_testdata_file("MR_small.dcm")}
PATIENT_PREFIX = "Bulktest^Patient"


def write_instance(path: Path, index: int, *, modality: str = "CT") -> Path:
    """A distinct instance (own patient, study, series and SOP UIDs) built from a bundled file."""
    dataset = dcmread(SOURCES[modality])
    dataset.PatientName = f"{PATIENT_PREFIX}{index:05d}"
    dataset.PatientID = f"BULK-{index:05d}"
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_tree(tmp_path) -> Callable[..., Path]:
    """``dicom_tree(n, non_dicom=k)``: a nested tree of n DICOM files and k files that are not DICOM."""

    def build(count: int, *, non_dicom: int = 0, name: str = "tree") -> Path:
        root = tmp_path / name
        for index in range(count):
            write_instance(root / f"s{index % 3}" / f"d{index % 2}" / f"{index}.dcm", index)
        for index in range(non_dicom):
            (root / f"notes-{index}.txt").write_text("not an image\n")
        root.mkdir(parents=True, exist_ok=True)
        return root

    return build


@pytest.fixture
def store_original(tmp_path) -> Callable[..., object]:
    """``store_original(user, modality=..., study_type=...)``: an original stored like an upload."""
    counter = iter(range(100000))

    def store(user, *, modality: str = "CT", study_type: str = "general"):
        index = next(counter)
        staged = write_instance(tmp_path / "staging" / f"{index}.dcm", 90000 + index, modality=modality)
        request = IngestRequest(
            staged_path=staged, sha256=None, anonymize=False, study_type=study_type, options=DeidOptions()
        )
        return ingest_file(request=request, actor=Actor(user=user))

    return store


def stored_dicom_keys(storage_root: Path) -> list[Path]:
    base = storage_root / "dicom"
    return sorted(base.rglob("*.dcm")) if base.exists() else []


@pytest.fixture
def subprocess_env(tmp_path) -> dict:
    """The environment of a ``manage.py`` subprocess: the test database, this test's storage and key."""
    db = connection.settings_dict
    credentials = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{credentials}@{quote(db['HOST'])}:{db['PORT']}/{quote(db['NAME'])}",
        "DICOM_DATA_DIR": str(tmp_path),
        "DICOM_DEID_KEY": settings.DICOM_DEID_KEY,
        "DJANGO_LOG_LEVEL": "WARNING",
        "DICOM_WORKER_HEARTBEAT_SECONDS": "1",
        "DICOM_WORKER_STALE_SECONDS": "3",
        "PYTHONUNBUFFERED": "1",
    }
    assert db["ENGINE"].endswith("postgresql"), "subprocess tests run on PostgreSQL"
    return env


class Processes:
    """Started subprocesses (``manage.py`` commands, servers); those alive are killed when the test ends."""

    def __init__(self, env: dict, log_dir: Path) -> None:
        self.env, self.log_dir, self.started, self.groups = env, log_dir, [], []

    def start(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return self.start_program(sys.executable, str(PROJECT / "manage.py"), *args, env=env)

    def start_program(self, *argv: str, env: dict | None = None, session: bool = False) -> subprocess.Popen:
        """Any program in the project directory; with ``session`` it leads its own process group,
        which ``stop_all`` kills whole (a server and the processes it started)."""
        log = open(self.log_dir / f"proc-{len(self.started)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            argv,
            cwd=PROJECT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=session,
        )
        self.started.append((process, log))
        if session:
            self.groups.append(process.pid)
        return process

    def output(self, process: subprocess.Popen) -> str:
        for started, log in self.started:
            if started is process:
                log.flush()
                return Path(log.name).read_text(errors="replace")
        return ""

    def stop_all(self) -> None:
        for group in self.groups:
            # A session leader's group: whatever it started goes too, even once the leader is gone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        for process, log in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
            log.close()


@pytest.fixture
def processes(subprocess_env, tmp_path):
    started = Processes(subprocess_env, tmp_path)
    yield started
    started.stop_all()


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def copy_file(source: Path, destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    return destination
