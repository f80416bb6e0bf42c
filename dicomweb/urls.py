"""``/dicomweb/``: the DICOMweb service root (PS3.18). Paths answer with and without a trailing slash.

A path segment is taken as the client sent it (any text but a slash): a UID that is not one is
simply not found (404 with a detail), never a page of Django's.
"""

from django.urls import re_path

from dicomweb import views

UID = r"[^/]+"
STUDY = rf"studies/(?P<study>{UID})"
SERIES = rf"{STUDY}/series/(?P<series>{UID})"
INSTANCE = rf"{SERIES}/instances/(?P<instance>{UID})"
FRAMES = rf"{INSTANCE}/frames/(?P<frames>{UID})"


def _path(pattern: str, view, name: str):
    return re_path(rf"^{pattern}/?$", view.as_view(), name=f"dicomweb-{name}")


urlpatterns = [
    _path("studies", views.StudiesView, "studies"),
    _path("series", views.SeriesSearchView, "series-search"),
    _path("instances", views.InstanceSearchView, "instance-search"),
    _path(STUDY, views.StudyView, "study"),
    _path(f"{STUDY}/metadata", views.MetadataView, "study-metadata"),
    _path(f"{STUDY}/rendered", views.RenderedView, "study-rendered"),
    _path(f"{STUDY}/thumbnail", views.ThumbnailView, "study-thumbnail"),
    _path(f"{STUDY}/series", views.SeriesSearchView, "study-series"),
    _path(f"{STUDY}/instances", views.InstanceSearchView, "study-instances"),
    _path(SERIES, views.SeriesView, "series"),
    _path(f"{SERIES}/metadata", views.MetadataView, "series-metadata"),
    _path(f"{SERIES}/rendered", views.RenderedView, "series-rendered"),
    _path(f"{SERIES}/thumbnail", views.ThumbnailView, "series-thumbnail"),
    _path(f"{SERIES}/instances", views.InstanceSearchView, "series-instances"),
    _path(INSTANCE, views.InstanceView, "instance"),
    _path(f"{INSTANCE}/metadata", views.MetadataView, "instance-metadata"),
    _path(f"{INSTANCE}/rendered", views.RenderedView, "instance-rendered"),
    _path(f"{INSTANCE}/thumbnail", views.ThumbnailView, "instance-thumbnail"),
    _path(FRAMES, views.FramesView, "frames"),
    _path(f"{FRAMES}/rendered", views.RenderedView, "frames-rendered"),
    _path(f"{FRAMES}/thumbnail", views.ThumbnailView, "frames-thumbnail"),
    re_path(
        rf"^{INSTANCE}/bulkdata/(?P<path>.+?)/?$", views.BulkDataView.as_view(), name="dicomweb-bulkdata"
    ),
]
