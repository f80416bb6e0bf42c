"""The one hook other apps have on stored files: told, inside the transaction that commits them.

``dimse.forwarding`` listens (its forwarding rules queue a send per matching destination). The dicom
app does not import its listeners: they register at start-up (``on_files_stored``, from their
app's ``ready``), as the job bodies register their give-up handlers (``task_queue``).

:func:`files_stored` is called at each place a file becomes ``completed`` with stored bytes: the
ingest service (REST upload, STOW-RS, C-STORE), the anonymize job and a bulk run's batch. It runs
inside the caller's ``transaction.atomic``: whatever a listener writes (rows, job rows, which live in
the same database) commits with the files or not at all, so a rolled-back store sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dicom.models import DicomFile

# listener(files, called_ae): ``called_ae`` is our AE title the files were received on (C-STORE), else "".
Listener = Callable[[Sequence[DicomFile], str], None]
_listeners: list[Listener] = []


def on_files_stored(listener: Listener) -> None:
    """Register ``listener`` (once; registering it again changes nothing)."""
    if listener not in _listeners:
        _listeners.append(listener)


def files_stored(files: Sequence[DicomFile], *, called_ae: str = "") -> None:
    """Tell the listeners that ``files`` are stored and completed; call inside the committing transaction.

    Listeners may rely on each file's ``id`` and ``anonymized`` only (the anonymize job's row is
    updated in the database, not in memory). What a listener raises rolls the store back.
    """
    if not files:
        return
    for listener in _listeners:
        listener(files, called_ae)
