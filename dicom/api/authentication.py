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

    def authenticate(self, request):
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            # A real token whose user may not act (deactivated): the 401 is audited against that
            # user, so a privacy officer sees who tried.
            key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[2].strip()
            token = self.get_model().objects.select_related("user").filter(key=key).first() if key else None
            request._request.refused_user = token.user if token is not None else None
            raise

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
