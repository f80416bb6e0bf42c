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


def exception_handler(exc, context):
    """Map the domain's and DRF's errors onto ``{"detail": ...}`` with the right status code."""
    headers = {}
    if isinstance(exc, DicomServiceError):
        code, detail = exc.status_code, exc.detail
    elif isinstance(exc, Http404):
        code, detail = status.HTTP_404_NOT_FOUND, "not found"
    elif isinstance(exc, PermissionDenied):
        code, detail = status.HTTP_403_FORBIDDEN, "permission denied"
    elif isinstance(exc, RequestDataTooBig):
        code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        detail = f"the form fields exceed {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes (the file part is not counted)"
    elif isinstance(exc, TooManyFilesSent):
        code, detail = (
            status.HTTP_400_BAD_REQUEST,
            f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} file parts",
        )
    elif isinstance(exc, TooManyFieldsSent):
        code, detail = (
            status.HTTP_400_BAD_REQUEST,
            f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields",
        )
    elif isinstance(exc, SuspiciousOperation):
        code, detail = status.HTTP_400_BAD_REQUEST, "the request is malformed"
    elif isinstance(exc, exceptions.APIException):
        code, detail = exc.status_code, _flatten(exc.detail)
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
    else:
        # A bug, never the client's fault; the traceback goes to the log, not to the client.
        logger.exception("unhandled error in %s", context["view"].__class__.__name__)
        code, detail = status.HTTP_500_INTERNAL_SERVER_ERROR, "internal server error"
    set_rollback()
    return Response({"detail": detail}, status=code, headers=headers)
