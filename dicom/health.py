"""``/healthz`` and ``/readyz``: the probes of a load balancer, compose or an orchestrator.

``/healthz`` says the process answers (nothing else is touched); ``/readyz`` runs the readiness
checks of :mod:`dicom.services.health` and answers 503 naming what failed. Both answer without
credentials, write no audit row (they are not operations on files), hold no patient data and read
no query string.

A probe comes with whatever ``Host`` the prober uses (often the container's address) and over
plain HTTP, so :class:`ProbeMiddleware` answers these two paths before the host validation of
``CommonMiddleware`` and any HTTPS redirect of ``SecurityMiddleware``; the URLconf lists the same
views, for ``reverse()`` and for a stack without the middleware.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from dicom.services.health import readiness


@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    results = readiness()
    checks = {name: result.as_dict() for name, result in results.items()}
    failed = [name for name, result in results.items() if not result.ok]
    if failed:
        return JsonResponse({"detail": f"not ready: {', '.join(failed)}", "checks": checks}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})


PROBES = {"/healthz": healthz, "/healthz/": healthz, "/readyz": readyz, "/readyz/": readyz}


class ProbeMiddleware:
    """Answer the probe paths at once, whatever the ``Host`` header and the scheme."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)
