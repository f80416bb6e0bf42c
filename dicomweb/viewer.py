"""The OHIF viewer (v3) under ``/viewer/``, for staff, on the same origin as ``/dicomweb``.

Its files are installed at build time (``scripts/install_viewer.py``, by ``make run``, ``make test``
and the Dockerfile) into ``DICOM_VIEWER_DIR`` and served by WhiteNoise (:class:`ViewerFiles`): they
are the public build of OHIF and hold no data. Its pages (any other path under ``/viewer/``, the
single-page application's routes) and its configuration need a staff member's session: OHIF then
speaks DICOMweb to this service with that session's cookie, so every study it lists and every frame
it shows goes through DICOMweb's access rule and audit, as any client's would.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, HttpResponse
from django.views.decorators.http import require_safe
from whitenoise.middleware import WhiteNoiseMiddleware

from dicomweb.base import service_root

PREFIX = "/viewer/"


def viewer_dir() -> Path:
    return Path(settings.DICOM_VIEWER_DIR)


def installed() -> bool:
    return (viewer_dir() / "index.html").is_file()


def study_url(study_instance_uid: str) -> str | None:
    """The viewer's page for one study, or None when the viewer is not installed."""
    if not installed() or not study_instance_uid:
        return None
    return f"{PREFIX}viewer?{urlencode({'StudyInstanceUIDs': study_instance_uid})}"


class ViewerFiles(WhiteNoiseMiddleware):
    """WhiteNoise, also serving the installed viewer's files under ``/viewer/`` (when it is installed)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if installed():
            self.add_files(str(viewer_dir()), prefix=PREFIX.strip("/") + "/")

    def immutable_file_test(self, path, url):
        # OHIF's bundles carry a 16-hex content hash in their names; Django's static files, 12.
        if url.startswith(PREFIX):
            return ".bundle." in url or url.endswith((".wasm", ".woff2"))
        return super().immutable_file_test(path, url)


def _config(request) -> dict:
    root = service_root(request)
    return {
        "routerBasename": PREFIX.rstrip("/"),
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "defaultDataSourceName": "dicomsvc",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "dicomsvc",
                "configuration": {
                    "friendlyName": "DICOM service",
                    "name": "dicomsvc",
                    "wadoUriRoot": root,
                    "qidoRoot": root,
                    "wadoRoot": root,
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True},
                    "omitQuotationForMultipartRequest": True,
                    "dicomUploadEnabled": False,
                },
            }
        ],
    }


@require_safe
@staff_member_required
def app_config(request) -> HttpResponse:
    """OHIF's ``app-config.js``: this service's DICOMweb root as its one data source."""
    body = f"window.config = {json.dumps(_config(request), indent=2)};\n"
    response = HttpResponse(body, content_type="application/javascript; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


@require_safe
@staff_member_required
def page(request, route: str = "") -> HttpResponse:
    """Any page of the viewer (its routes live in the browser): OHIF's ``index.html``."""
    if not installed():
        return HttpResponse(
            "The viewer is not installed: run `make run` (or scripts/install_viewer.py).",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    response = FileResponse(open(viewer_dir() / "index.html", "rb"), content_type="text/html; charset=utf-8")  # noqa: SIM115
    response["Cache-Control"] = "no-store"
    return response
