"""Token authentication with a short in-process cache, so most requests skip the token lookup."""

import threading
import time

from django.conf import settings
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

_cache: dict[str, tuple[float, object, object]] = {}
_lock = threading.Lock()
_MAX_ENTRIES = 10_000


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, remembering a valid key for ``DICOM_TOKEN_CACHE_SECONDS``.

    A deleted token or a deactivated user is refused at the latest that many seconds later (the
    default, 30, is the price of skipping a database round trip on every upload). 0 disables it.
    """

    def authenticate_credentials(self, key):
        ttl = getattr(settings, "DICOM_TOKEN_CACHE_SECONDS", 30)
        now = time.monotonic()
        if ttl > 0:
            entry = _cache.get(key)
            if entry is not None and entry[0] > now:
                return entry[1], entry[2]
        try:
            user, token = super().authenticate_credentials(key)
        except AuthenticationFailed:
            _cache.pop(key, None)
            raise
        if ttl > 0:
            with _lock:
                if len(_cache) >= _MAX_ENTRIES:
                    _cache.clear()
                _cache[key] = (now + ttl, user, token)
        return user, token


def clear_token_cache() -> None:
    with _lock:
        _cache.clear()
