"""``/viewer/``: the OHIF viewer's configuration and pages (its files are served by ``ViewerFiles``)."""

from django.urls import path, re_path

from dicomweb import viewer

urlpatterns = [
    path("app-config.js", viewer.app_config, name="viewer-config"),
    re_path(r"^(?P<route>.*)$", viewer.page, name="viewer"),
]
