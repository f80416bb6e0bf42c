"""What every DICOMweb view shares: the API's authentication, the one access rule, one audit row.

A DICOMweb request is authenticated exactly as an API request (a token, or a staff member's
session), refused requests are audited as the API audits them, and each request is one audited
operation (``audit.services.operation``) whose row names the studies, series and instances it
answered with (``Operation.touch``). Errors answer ``{"detail": "..."}`` as JSON, with the API's
status codes (``dicom.api.errors``); nothing a client sends answers 500.

Content negotiation is the views' own (``dicomweb.media``): DRF's would refuse the multipart and
``application/dicom+json`` types DICOMweb clients ask for before a view runs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from django.conf import settings
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from audit.services import Operation, operation
from dicom.api.entry import AuditedEntryPoint
from dicom.api.errors import describe


class ErrorsAsJson(BaseContentNegotiation):
    """DRF renders only errors here (as JSON, whatever the Accept header); views answer the rest."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class DicomWebView(AuditedEntryPoint, APIView):
    """A DICOMweb resource. ``audit_actions`` maps each HTTP method a subclass serves to its action."""

    audit_actions: dict[str, str] = {}
    renderer_classes = [JSONRenderer]
    parser_classes: list = []  # bodies (STOW) are read by the view itself, part by part
    content_negotiation_class = ErrorsAsJson
    # The operation the current request's method runs in (set by :func:`audited`).
    op: Operation | None = None

    def refused_action(self, request) -> str | None:
        return self.audit_actions.get(request.method)


def audited(method: Callable) -> Callable:
    """Run a view method as one audited operation of the action ``audit_actions`` names for it.

    The method reaches the operation as ``self.op`` to name what it touched. HEAD reads nothing
    of a file and is not audited (as in the API).
    """

    @functools.wraps(method)
    def handler(self: DicomWebView, request, *args, **kwargs):
        action = self.audit_actions.get(request.method)
        if action is None or request.method == "HEAD":
            return method(self, request, *args, **kwargs)
        with operation(actor=self.actor(), action=action, describe=describe) as op:
            self.op = op
            return method(self, request, *args, **kwargs)

    return handler


_FORWARDED_PAIR = re.compile(r'(?i)\b(proto|host)=("[^"]*"|[^;,\s]*)')
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_SAFE_PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)*$")


def service_root(request) -> str:
    """The absolute URL of ``/dicomweb`` as the client reached it, without a trailing slash.

    ``DICOMWEB_PUBLIC_URL`` when configured (a proxy that rewrites everything); else the scheme
    and host of the first ``Forwarded`` element, or ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` /
    ``X-Forwarded-Prefix``, or the request's own. Only well-formed hosts and prefixes are taken: a
    URL the service writes into a response never carries a client's stray characters.
    """
    configured = settings.DICOMWEB_PUBLIC_URL
    if configured:
        return configured.rstrip("/")
    meta = request.META
    proto, host = None, None
    forwarded = meta.get("HTTP_FORWARDED", "").split(",", 1)[0]
    for key, value in _FORWARDED_PAIR.findall(forwarded):
        value = value.strip('"')
        if key.lower() == "proto":
            proto = value
        else:
            host = value
    proto = proto or meta.get("HTTP_X_FORWARDED_PROTO", "").split(",", 1)[0].strip() or request.scheme
    host = host or meta.get("HTTP_X_FORWARDED_HOST", "").split(",", 1)[0].strip() or request.get_host()
    prefix = meta.get("HTTP_X_FORWARDED_PREFIX", "").split(",", 1)[0].strip().rstrip("/")
    if proto.lower() not in ("http", "https"):
        proto = request.scheme
    if not _SAFE_HOST.match(host):
        host = request.get_host()
    if not _SAFE_PREFIX.match(prefix):
        prefix = ""
    return f"{proto.lower()}://{host}{prefix}/dicomweb"
