"""The direct path: plain token-authenticated reads (metadata, status, download) and raw uploads,
without Django's middleware chain and DRF's dispatch around them.

A small file's metadata read spent more of its CPU in the machinery around the work (building
DRF's request, content negotiation, the middleware chain's calls, rendering) than in the work (the
token, the access rule, the audit row). The web server (``dicomsite.server``) asks :func:`respond`
first; it answers only requests whose every step is plain, and returns None for the rest, which go
the usual way:

- ``GET /api/dicom/{metadata,status,download}/<file_id>`` (with or without the trailing slash), and
  ``POST /api/dicom/upload`` of a raw ``application/dicom`` body the web server staged as it came;
- ``Authorization: Token <key>`` whose key is valid (a bad or missing one goes the usual way, to be
  refused and audited there); ``Accept`` absent, ``*/*`` or ``application/json`` (anything else is
  DRF's content negotiation);
- a Host the settings allow, and no HTTPS redirect due.

What it does is what the usual way does, by the same code: the token through the API's own
authentication class (and its cache), the read through :mod:`dicom.api.reads` (the access rule,
the patient data rule), the upload's fields through the API's serializer and the file through
:mod:`dicom.api.upload` (validation, ingest), one audit row through ``audit.services.operation``,
errors through ``dicom.api.errors.answer``, the request id and its log lines (``audit.context``,
``dicomsite.logs``), and the response headers from the middleware that sets them (security,
frame options, length). ``MIDDLEWARE_WRITTEN_FOR`` is the chain this was checked against: a test
fails when the settings' chain differs, so a new middleware is not skipped unnoticed.
"""

from __future__ import annotations

import io
import re
import time

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware
from rest_framework.renderers import JSONRenderer

from audit.context import log_failed_response, request_id_scope
from audit.models import AuditLog
from audit.services import Actor, operation
from dicom.api import reads
from dicom.api import upload as upload_api
from dicom.api.authentication import CachedTokenAuthentication
from dicom.api.errors import answer, describe
from dicom.api.serializers import RawUploadSerializer
from dicom.responses import client_address, uuid_or_none
from dicom.uploads import StagedUpload
from dicomsite.logs import log_request

# What the usual way runs, as this module was written for (see the module's docstring): the
# middleware chain, and the API's authentication, permission and throttle classes.
REST_FRAMEWORK_WRITTEN_FOR = {
    "authentication": ("CachedTokenAuthentication", "SessionAuthentication"),
    "permission": ("IsAuthenticated",),
    "throttle": (),
}
MIDDLEWARE_WRITTEN_FOR = (
    "audit.context.RequestIdMiddleware",
    "dicom.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "dicomweb.viewer.ViewerFiles",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dicomsite.logs.RequestLogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)

_READ_ROUTE = re.compile(r"^/api/dicom/(metadata|status|download)/([^/]+)/?$")
_UPLOAD_ROUTE = re.compile(r"^/api/dicom/upload/?$")
_PLAIN_ACCEPT = frozenset({b"", b"*/*", b"application/json"})
_ACTIONS = {
    "metadata": AuditLog.Action.METADATA,
    "status": AuditLog.Action.STATUS,
    "download": AuditLog.Action.DOWNLOAD,
    "upload": AuditLog.Action.UPLOAD,
}
_READS = {"metadata": reads.metadata, "status": reads.status}
# DRF's APIView adds Vary: Accept and Allow (the view's methods) to every response of these views.
_ALLOW = {"upload": "POST, OPTIONS"}
_ALLOW_READS = "GET, HEAD, OPTIONS"
_VIEW_NAME = "DicomViewSet"


def _unused_get_response(request):  # the middleware below are asked for their response half only
    raise AssertionError("the direct path never calls the rest of the chain")


# Response headers, in the order the usual way's chain applies them (innermost first).
_RESPONSE_MIDDLEWARE = (
    XFrameOptionsMiddleware(_unused_get_response),
    CommonMiddleware(_unused_get_response),
    SecurityMiddleware(_unused_get_response),
)
_authentication = CachedTokenAuthentication()
_renderer = JSONRenderer()


def respond(scope: dict, body_file) -> HttpResponse | None:
    """The response to a request the direct path serves, or None for the usual way (see the module).

    ``body_file`` is the request's body as the web server received it: a raw upload's is the staged
    file (``dicom.uploads.StagedUpload``), which the direct path takes only then.
    """
    path = scope.get("path", "").removeprefix(scope.get("root_path", "").rstrip("/"))
    if scope.get("method") == "GET" and (match := _READ_ROUTE.match(path)) is not None:
        kind, file_id = match.groups()
    elif scope.get("method") == "POST" and isinstance(body_file, StagedUpload) and _UPLOAD_ROUTE.match(path):
        kind, file_id = "upload", None
    else:
        return None
    authorization, accept = b"", b""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            authorization = value
        elif name == b"accept":
            accept = value.strip()
    scheme, _, key = authorization.partition(b" ")
    key = key.strip()
    if scheme.lower() != b"token" or not key or b" " in key or accept not in _PLAIN_ACCEPT:
        return None
    request = ASGIRequest(scope, io.BytesIO())
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        return None
    try:
        request.get_host()
        user, _token = _authentication.authenticate_credentials(key.decode("ascii"))
    except Exception:
        # A disallowed Host, a bad key or the database away: the usual way answers each as it
        # always has (400, 401 audited, 503 with Retry-After).
        return None
    started = time.monotonic()
    request.user = user  # for the log line, as DRF sets it on the Django request
    with request_id_scope() as request_id:
        response = _serve(request, kind=kind, file_id=file_id, body_file=body_file)
        for headers_from in _RESPONSE_MIDDLEWARE:
            response = headers_from.process_response(request, response)
        log_request(request, response, started=started)
        log_failed_response(request, response)
    response["X-Request-ID"] = str(request_id)
    return response


def _serve(request: ASGIRequest, *, kind: str, file_id: str | None, body_file) -> HttpResponse:
    actor = Actor(user=request.user, client_address=client_address(request))
    try:
        with operation(actor=actor, action=_ACTIONS[kind], file_id=uuid_or_none(file_id), describe=describe):
            if kind == "upload":
                response = _json(_upload(request, actor, body_file), 200)
            elif kind == "download":
                response = reads.download(user=request.user, file_id=file_id)
            else:
                response = _json(_READS[kind](user=request.user, file_id=file_id), 200)
    except Exception as error:  # audited by the operation; answered as the API answers it
        code, detail, headers = answer(error, where=_VIEW_NAME)
        response = _json({"detail": detail}, code)
        for name, value in headers.items():
            response[name] = value
    response["Vary"] = "Accept"
    response["Allow"] = _ALLOW.get(kind, _ALLOW_READS)
    return response


def _upload(request: ASGIRequest, actor: Actor, staged: StagedUpload) -> dict:
    """The raw upload (``Content-Type: application/dicom``): its fields are the query parameters."""
    declared = request.META.get("CONTENT_LENGTH")
    upload_api.refuse_declared_length(int(declared) if declared else staged.size)
    fields = RawUploadSerializer(data=request.GET)
    fields.is_valid(raise_exception=True)
    return upload_api.store_upload(
        user=request.user, actor=actor, upload=staged, fields=fields.validated_data
    )


def _json(data: dict, status: int) -> HttpResponse:
    return HttpResponse(_renderer.render(data), status=status, content_type="application/json")
