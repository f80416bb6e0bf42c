"""The secret behind every keyed pseudonym, UID and date shift."""

import os
import secrets
import tempfile
from functools import cache
from pathlib import Path

from django.conf import settings


@cache
def deid_key() -> bytes:
    """Return the de-identification key: ``DICOM_DEID_KEY``, or the embedded key file.

    In the embedded mode a random key is written once to ``DICOM_DATA_DIR/deid.key`` (mode 0600)
    and read from there afterwards, so mappings stay stable across restarts. Production settings
    refuse to start without ``DICOM_DEID_KEY``.
    """
    if settings.DICOM_DEID_KEY:
        return settings.DICOM_DEID_KEY.encode()
    path = Path(settings.DICOM_DEID_KEY_FILE)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole to a private temporary name, then linked: a racing process sees either no
        # key file or a complete one, and the first link wins.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".deid-key-")
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    key = path.read_text().strip()
    if len(key) < 32:
        raise RuntimeError(f"the de-identification key file {path} is shorter than 32 characters")
    return key.encode()
