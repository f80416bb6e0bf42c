"""Keyed, table-free mappings: UIDs, patient pseudonyms and the date offset.

Every mapping is HMAC-SHA256 under the de-identification key, so the same input gives the same output
in every file, process and run that shares the key, and nothing needs to be stored. Changing the key
changes every mapping.
"""

from __future__ import annotations

import hashlib
import hmac

UID_ROOT = "2.25."
MAX_DATE_SHIFT_DAYS = 3650


def _digest(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


def keyed_uid(key: bytes, uid: str) -> str:
    """A valid UID under ``2.25.`` (the decimal of the first 128 bits of HMAC(key, uid)); <= 44 chars."""
    return UID_ROOT + str(int.from_bytes(_digest(key, "uid:" + uid)[:16], "big"))


def normalise_id(value: str) -> str:
    """An ID as the same patient's files may spell it: surrounding and repeated spaces, case ignored."""
    return " ".join(value.split()).upper()


def normalise_name(value: str) -> str:
    """A person name as its variants spell it: ``Doe^Jane``, ``DOE^JANE^``, `` doe ^ jane `` are one.

    Each component group (``=``) is split into components (``^``), each trimmed and its spaces
    collapsed; trailing empty components and groups are dropped (PS3.5 6.2.1 allows both forms); case
    is ignored.
    """
    groups = []
    for group in value.split("="):
        components = [" ".join(component.split()) for component in group.split("^")]
        while components and not components[-1]:
            components.pop()
        groups.append("^".join(components))
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups).upper()


def pseudonym_id(key: bytes, patient_id: str) -> str:
    """A patient ID pseudonym: the first 16 hex digits of HMAC(key, "pid:" + normalised original)."""
    return _digest(key, "pid:" + normalise_id(patient_id)).hex()[:16].upper()


def pseudonym_name(key: bytes, patient_name: str) -> str:
    """A patient name pseudonym, ``ANON^`` + 16 hex digits of HMAC(key, "pn:" + normalised original)."""
    return "ANON^" + _digest(key, "pn:" + normalise_name(patient_name)).hex()[:16].upper()


def date_shift_days(key: bytes, patient_key: str) -> int:
    """Days to move one patient's dates back: 1..3650, from HMAC(key, "dates:" + patient key).

    The key is normalised like an ID, so one patient's spellings share one offset.
    """
    digest = _digest(key, "dates:" + normalise_id(patient_key))
    return 1 + int.from_bytes(digest[:8], "big") % MAX_DATE_SHIFT_DAYS
