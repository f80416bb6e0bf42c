"""Readiness: can this process reach its database, its storage and its job queue right now?

Each check runs in a thread of its own and is given ``CHECK_TIMEOUT_SECONDS``: a dependency that
hangs (a database that accepts connections and never answers, an S3 endpoint behind a dead
proxy) is reported ``timeout`` when the bound has passed, and the probe answers. A check still
hanging from an earlier probe is not started again (it is reported ``timeout`` at once), so a
hanging dependency costs at most one thread per check and process, not one per probe.

Results carry the check's name, its outcome, its duration and, on failure, the *class name* of what
went wrong: never an exception's message, which can carry a host, a user name or a value.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import DEFAULT_DB_ALIAS, connections

from dicom.services import task_queue
from dicom.services.storage import new_staging_path, staging_dir

CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``status`` is ``ok``, ``failed`` or ``timeout``."""

    status: str
    duration_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict:
        result = {"status": self.status, "duration_ms": self.duration_ms}
        if self.error is not None:
            result["error"] = self.error
        return result


class StorageNotReadyError(Exception):
    """The local storage directory or its staging directory is missing or not writable."""


def check_database() -> None:
    """``SELECT 1`` on a connection of this thread to the default database. Raises on failure."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_storage() -> None:
    """Local: the storage directory exists and takes a file in its ``.staging``. S3: a HEAD of the bucket.

    The storage directory is not created here: a missing one is a volume that is not mounted, and
    files written to the container's own disk would be lost. Its ``.staging`` is the service's
    own and is created on first use, as every upload does. The probe file is removed at once (it
    carries the staging prefix, so the sweep takes it should this process die in between).
    Raises on failure.
    """
    storage = default_storage
    if isinstance(storage, FileSystemStorage):
        _check_local_directories(Path(storage.location))
    else:
        _check_bucket(storage, timeout=CHECK_TIMEOUT_SECONDS)


def _writable_directory(path: Path) -> bool:
    # os.access answers for this process's user (root passes it whatever the mode).
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _check_local_directories(location: Path) -> None:
    if not _writable_directory(location):
        raise StorageNotReadyError
    staging = staging_dir()
    if not _writable_directory(staging):
        raise StorageNotReadyError
    new_staging_path(suffix=".probe").unlink()


def _check_bucket(storage, *, timeout: float) -> None:
    # A client of its own with short timeouts and no retries: the storage's client keeps the
    # defaults (60 s, retried), right for uploads, far too long for a probe.
    config = storage.client_config.merge(
        Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1})
    )
    if storage.session_profile:
        session = boto3.Session(profile_name=storage.session_profile)
    else:
        session = boto3.Session(
            aws_access_key_id=storage.access_key,
            aws_secret_access_key=storage.secret_key,
            aws_session_token=storage.security_token,
        )
    client = session.client(
        "s3",
        region_name=storage.region_name,
        use_ssl=storage.use_ssl,
        endpoint_url=storage.endpoint_url,
        config=config,
        verify=storage.verify,
    )
    client.head_bucket(Bucket=storage.bucket_name)


def check_job_queue() -> None:
    """The job queue's table answers a query. Raises on failure."""
    task_queue.check_reachable()


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "storage": check_storage,
    "job_queue": check_job_queue,
}

_in_flight: set[str] = set()
_in_flight_lock = threading.Lock()


class _Run:
    """One check running in its own thread; its result is read once the thread ends."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        self.name = name
        self.check = check
        self.result: CheckResult | None = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"readiness-{name}", daemon=True)

    def _run(self) -> None:
        try:
            self.check()
        except Exception as error:
            self.result = CheckResult("failed", _elapsed_ms(self.started), _error_name(error))
        else:
            self.result = CheckResult("ok", _elapsed_ms(self.started))
        finally:
            # The thread's own database connection (checks that used one) goes with the thread.
            connections.close_all()
            with _in_flight_lock:
                _in_flight.discard(self.name)


def _error_name(error: Exception) -> str:
    name = type(error).__name__
    if isinstance(error, ClientError):
        # The S3 error code (NoSuchBucket, AccessDenied, 403) says what is wrong and holds no value.
        code = error.response.get("Error", {}).get("Code")
        return f"{name} {code}" if code else name
    return name


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def readiness(*, timeout: float = CHECK_TIMEOUT_SECONDS) -> dict[str, CheckResult]:
    """Run every check at once, each bounded by ``timeout`` seconds; return their results by name.

    Side effects: each database check opens (and closes) a connection of its own; the local
    storage check creates and removes a file in staging. Raises nothing: a check that raised is
    ``failed``, one that did not finish in time is ``timeout``.
    """
    runs: list[_Run] = []
    results: dict[str, CheckResult] = {}
    for name, check in CHECKS.items():
        with _in_flight_lock:
            if name in _in_flight:
                results[name] = CheckResult("timeout", 0.0, "still running from an earlier probe")
                continue
            _in_flight.add(name)
        run = _Run(name, check)
        run.thread.start()
        runs.append(run)
    deadline = time.monotonic() + timeout
    for run in runs:
        run.thread.join(max(0.0, deadline - time.monotonic()))
        result = run.result
        if result is None:
            result = CheckResult("timeout", _elapsed_ms(run.started), f"no answer within {timeout:g} s")
        results[run.name] = result
    return {name: results[name] for name in CHECKS}
