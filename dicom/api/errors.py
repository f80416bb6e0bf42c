"""Every error the API answers has the seed's shape: ``{"detail": "<one string>"}``."""

import logging

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from dicom.services.errors import DicomServiceError
from dicomsite.errors import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS, database_unavailable

logger = logging.getLogger(__name__)


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            text = _flatten(value)
            parts.append(text if field in ("detail", "non_field_errors") else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def describe(exc: BaseException) -> tuple[int, str]:
    """The status code and the one-string detail the API answers for ``exc``; also the audit row's.

    Anything that is not the domain's or DRF's own error is a bug: 500 and a detail that says so.
    """
    if isinstance(exc, DicomServiceError):
        return exc.status_code, exc.detail
    if isinstance(exc, Http404):
        return status.HTTP_404_NOT_FOUND, "not found"
    if isinstance(exc, PermissionDenied):
        return status.HTTP_403_FORBIDDEN, "permission denied"
    if isinstance(exc, RequestDataTooBig):
        return (
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"the form fields exceed {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes (the file part is not counted)",
        )
    if isinstance(exc, TooManyFilesSent):
        return status.HTTP_400_BAD_REQUEST, f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} file parts"
    if isinstance(exc, TooManyFieldsSent):
        return status.HTTP_400_BAD_REQUEST, f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields"
    if isinstance(exc, SuspiciousOperation):
        return status.HTTP_400_BAD_REQUEST, "the request is malformed"
    if isinstance(exc, exceptions.APIException):
        return exc.status_code, _flatten(exc.detail)
    if database_unavailable(exc):
        return status.HTTP_503_SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE
    return status.HTTP_500_INTERNAL_SERVER_ERROR, "internal server error"


def exception_handler(exc, context):
    """Map the domain's and DRF's errors onto ``{"detail": ...}`` with the right status code."""
    code, detail, headers = answer(exc, where=context["view"].__class__.__name__)
    set_rollback()
    return Response({"detail": detail}, status=code, headers=headers)


def answer(exc: BaseException, *, where: str) -> tuple[int, str, dict[str, str]]:
    """The status, detail and headers the API answers for ``exc`` raised in ``where`` (a view's name).

    A 500 is a bug, never the client's fault: its traceback goes to the log, not to the client.
    """
    code, detail = describe(exc)
    headers = {}
    if isinstance(exc, exceptions.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
    if code == status.HTTP_503_SERVICE_UNAVAILABLE:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if code == status.HTTP_500_INTERNAL_SERVER_ERROR:
        logger.exception("unhandled error in %s", where)
    return code, detail, headers
