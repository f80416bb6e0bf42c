"""What a request answers when it fails outside the API's own handler: JSON, 503 while the database is away.

Django calls ``server_error`` (``handler500``) for any exception no view or middleware handled,
inside its ``except`` block, so the exception is at hand. A database that cannot be reached
(stopped, restarting, failed over) is not a bug of the service: 503 with a detail and a
Retry-After, so clients and load balancers try again, instead of a 500.
"""

import sys

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

DATABASE_UNAVAILABLE = "the database is unavailable: try again shortly"
RETRY_AFTER_SECONDS = 5


def database_unavailable(error: BaseException | None) -> bool:
    """Whether ``error`` means the database could not be reached (not a bad query)."""
    return isinstance(error, OperationalError | InterfaceError)


def server_error(request, *args, **kwargs) -> JsonResponse:
    error = sys.exc_info()[1]
    if database_unavailable(error):
        response = JsonResponse({"detail": DATABASE_UNAVAILABLE}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return JsonResponse({"detail": "internal server error"}, status=500)
