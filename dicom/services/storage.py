"""Where DICOM bytes live: Django's default storage, under keys the service makes.

Keys come from the file's UUID only (``dicom/ab/<uuid>.dcm``), never from a client's filename or a
DICOM value. Nothing partial is ever visible under a final key: on the local filesystem a file is
written (or received) beside its destination and renamed into place; on S3 an object appears only
once its upload completed.
"""

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    sha256: str


def key_for(file_id: uuid.UUID, *, suffix: str = ".dcm") -> str:
    text = str(file_id)
    return f"dicom/{text[:2]}/{text}{suffix}"


def preview_key_for(file_id: uuid.UUID, *, variant: str) -> str:
    text = str(file_id)
    return f"previews/{text[:2]}/{text}-{variant}.png"


def _is_local() -> bool:
    return isinstance(default_storage, FileSystemStorage)


def staging_dir() -> Path:
    """A directory for files being received or written, on the same filesystem as local storage."""
    if _is_local():
        path = Path(default_storage.location) / ".staging"
    else:
        path = Path(tempfile.gettempdir()) / "dicom-staging"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def sweep_staging(*, older_than_seconds: float) -> int:
    """Remove staged files last written more than ``older_than_seconds`` ago; return how many.

    A request or job that died (a killed worker, a lost connection) leaves its partial file behind,
    an original with patient data among them. No live request keeps one that long, so the worker
    sweeps them on every heartbeat, and the embedded server sweeps all of them before it starts.
    """
    cutoff = time.time() - older_than_seconds
    removed = 0
    with os.scandir(staging_dir()) as entries:
        for entry in entries:
            try:
                if (
                    entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime <= cutoff
                ):
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # finished and removed by its request meanwhile
    if removed:
        logger.warning("removed %d abandoned staging file(s)", removed)
    return removed


def sweep_staging_of_process(*, pid: int) -> int:
    """Remove the staged files of process ``pid``, known dead (a web worker killed mid-request).

    Called by gunicorn's master when one of its workers exits: a partial original with patient
    data goes at once, not after ``DICOM_STAGING_MAX_AGE_SECONDS``. Returns how many.
    """
    prefix = _staging_prefix(pid)
    removed = 0
    with os.scandir(staging_dir()) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        logger.warning("removed %d staging file(s) of exited process %d", removed, pid)
    return removed


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def durable_replace(source: Path, destination: Path) -> None:
    """Rename ``source`` to ``destination``, creating its folders; on disk when this returns.

    With ``DICOM_FSYNC`` (the default) the file's bytes are flushed before the rename, and the
    directory that gains the entry (and each directory created for it) after, so a power loss after
    an acknowledgement cannot lose the file or leave a name pointing at missing bytes.
    """
    durable = settings.DICOM_FSYNC
    created = _make_folders(destination.parent)
    if durable:
        _fsync(source)
    os.replace(source, destination)
    if durable:
        for folder in (destination.parent, *created):
            _fsync(folder)


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; the parents whose entries changed, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
    return [path.parent for path in missing]


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def store_staged_file(*, staged_path: str | os.PathLike, key: str, sha256: str | None = None) -> StoredFile:
    """Move a finished staged file to ``key`` and return what was stored.

    The staged file is consumed: renamed into place locally (no copy), uploaded then removed on S3.
    ``sha256`` is the digest computed while the file was written; it is computed here if absent.
    """
    staged = Path(staged_path)
    size = staged.stat().st_size
    digest = sha256 or sha256_of(staged)
    if _is_local():
        destination = Path(default_storage.path(key))
        os.chmod(staged, 0o600)
        try:
            durable_replace(staged, destination)
        except OSError:
            # A staging directory on another filesystem: copy beside the destination, then rename.
            with (
                tempfile.NamedTemporaryFile(dir=destination.parent, delete=False) as temporary,
                open(staged, "rb") as source,
            ):
                shutil.copyfileobj(source, temporary, _CHUNK)
            durable_replace(Path(temporary.name), destination)
            staged.unlink(missing_ok=True)
    else:
        with open(staged, "rb") as handle:
            saved = default_storage.save(key, File(handle))
        staged.unlink(missing_ok=True)
        if saved != key:
            default_storage.delete(saved)
            raise RuntimeError("storage refused the service's key")
    return StoredFile(key=key, size=size, sha256=digest)


def store_bytes(*, data: bytes, key: str) -> None:
    """Store a small derived blob (a preview PNG) under ``key``, replacing what was there."""
    with tempfile.NamedTemporaryFile(
        dir=staging_dir(), prefix=_staging_prefix(os.getpid()), delete=False
    ) as handle:
        handle.write(data)
    delete(key)
    store_staged_file(staged_path=handle.name, key=key)


def local_path(key: str) -> Path | None:
    """The file behind ``key`` when storage is the local filesystem, else ``None``."""
    return Path(default_storage.path(key)) if _is_local() else None


def open_stored(key: str) -> BinaryIO:
    return default_storage.open(key, "rb")


def exists(key: str) -> bool:
    return bool(key) and default_storage.exists(key)


def delete(key: str) -> None:
    if key:
        default_storage.delete(key)


# The top folders of the service's keys (key_for, preview_key_for): <folder>/<2 chars>/<uuid>...
KEY_FOLDERS = ("dicom", "previews")


def iter_keys() -> Iterator[tuple[str, uuid.UUID]]:
    """Every stored key the service made, with the file id its name starts with (others are skipped)."""
    for folder in KEY_FOLDERS:
        if not default_storage.exists(folder) and _is_local():
            continue
        shards, _ = default_storage.listdir(folder)
        for shard in shards:
            _, names = default_storage.listdir(f"{folder}/{shard}")
            for name in names:
                try:
                    file_id = uuid.UUID(name[:36])
                except ValueError:
                    continue
                yield f"{folder}/{shard}/{name}", file_id


def modified_at(key: str):
    return default_storage.get_modified_time(key)


def _staging_prefix(pid: int) -> str:
    # The writing process's id leads every staged name, so the files of a process that died can be
    # removed as soon as it is known dead (gunicorn's master, dicomsite/gunicorn.conf.py).
    return f"p{pid}-"


def new_staging_path(*, suffix: str = ".part") -> Path:
    handle, name = tempfile.mkstemp(dir=staging_dir(), prefix=_staging_prefix(os.getpid()), suffix=suffix)
    os.close(handle)
    return Path(name)
