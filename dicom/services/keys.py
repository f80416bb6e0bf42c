"""The secret behind every keyed pseudonym, UID and date shift."""

from django.conf import settings


def deid_key() -> bytes:
    """Return the de-identification key (``DICOM_DEID_KEY``; in the embedded mode ``deid.key``).

    Settings refuse to start in production without it, and create it once under
    ``DICOM_DATA_DIR`` in the embedded mode, so mappings stay stable across restarts.
    """
    return settings.DICOM_DEID_KEY.encode()
