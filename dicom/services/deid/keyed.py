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


def pseudonym_id(key: bytes, patient_id: str) -> str:
    """A patient ID pseudonym: the first 16 hex digits of HMAC(key, "pid:" + original)."""
    return _digest(key, "pid:" + patient_id).hex()[:16].upper()


def pseudonym_name(key: bytes, patient_name: str) -> str:
    """A patient name pseudonym, ``ANON^`` + 16 hex digits of HMAC(key, "pn:" + original)."""
    return "ANON^" + _digest(key, "pn:" + patient_name).hex()[:16].upper()


def date_shift_days(key: bytes, patient_key: str) -> int:
    """Days to move one patient's dates back: 1..3650, from HMAC(key, "dates:" + patient key)."""
    return 1 + int.from_bytes(_digest(key, "dates:" + patient_key)[:8], "big") % MAX_DATE_SHIFT_DAYS
