"""The DICOMweb resources (PS3.18): each view authenticates, audits and hands over to one module.

STOW-RS is :mod:`dicomweb.stow`, QIDO-RS :mod:`dicomweb.qido`, WADO-RS :mod:`dicomweb.wado`. The
views hold no DICOM logic: they name the audit action of each method and pass the path's UIDs on.
"""

from __future__ import annotations

from audit.models import AuditLog
from dicomweb import qido, stow, wado
from dicomweb.base import DicomWebView, audited

A = AuditLog.Action


class StudiesView(DicomWebView):
    """``/studies``: search for studies (QIDO-RS), store instances (STOW-RS)."""

    audit_actions = {"GET": A.SEARCH, "POST": A.UPLOAD}

    @audited
    def get(self, request):
        return qido.search(self, request, level=qido.STUDY)

    def post(self, request):  # audited per instance, with each stored file (dicomweb.stow)
        return stow.store(self, request, study=None)


class StudyView(DicomWebView):
    """``/studies/{study}``: retrieve a study (WADO-RS), store instances into it (STOW-RS)."""

    audit_actions = {"GET": A.DOWNLOAD, "POST": A.UPLOAD}

    @audited
    def get(self, request, study):
        return wado.retrieve(self, request, study=study)

    def post(self, request, study):  # audited per instance, with each stored file (dicomweb.stow)
        return stow.store(self, request, study=study)


class SeriesSearchView(DicomWebView):
    """``/series`` and ``/studies/{study}/series``: search for series."""

    audit_actions = {"GET": A.SEARCH}

    @audited
    def get(self, request, study=None):
        return qido.search(self, request, level=qido.SERIES, study=study)


class InstanceSearchView(DicomWebView):
    """``/instances``, ``/studies/{study}/instances``, ``/studies/{study}/series/{series}/instances``."""

    audit_actions = {"GET": A.SEARCH}

    @audited
    def get(self, request, study=None, series=None):
        return qido.search(self, request, level=qido.INSTANCE, study=study, series=series)


class SeriesView(DicomWebView):
    """``/studies/{study}/series/{series}``: retrieve a series."""

    audit_actions = {"GET": A.DOWNLOAD}

    @audited
    def get(self, request, study, series):
        return wado.retrieve(self, request, study=study, series=series)


class InstanceView(DicomWebView):
    """``/studies/{study}/series/{series}/instances/{instance}``: retrieve an instance."""

    audit_actions = {"GET": A.DOWNLOAD}

    @audited
    def get(self, request, study, series, instance):
        return wado.retrieve(self, request, study=study, series=series, instance=instance)


class MetadataView(DicomWebView):
    """``.../metadata`` of a study, a series or an instance."""

    audit_actions = {"GET": A.METADATA}

    @audited
    def get(self, request, study, series=None, instance=None):
        return wado.metadata(self, request, study=study, series=series, instance=instance)


class RenderedView(DicomWebView):
    """``.../rendered`` of a study, a series, an instance or frames of it."""

    audit_actions = {"GET": A.VIEW}

    @audited
    def get(self, request, study, series=None, instance=None, frames=None):
        return wado.rendered(self, request, study=study, series=series, instance=instance, frames=frames)


class ThumbnailView(DicomWebView):
    """``.../thumbnail`` of a study, a series, an instance or frames of it."""

    audit_actions = {"GET": A.VIEW}

    @audited
    def get(self, request, study, series=None, instance=None, frames=None):
        return wado.rendered(
            self, request, study=study, series=series, instance=instance, frames=frames, thumbnail=True
        )


class FramesView(DicomWebView):
    """``.../instances/{instance}/frames/{frames}``: frames as bulk data."""

    audit_actions = {"GET": A.DOWNLOAD}

    @audited
    def get(self, request, study, series, instance, frames):
        return wado.frames(self, request, study=study, series=series, instance=instance, frames=frames)


class BulkDataView(DicomWebView):
    """``.../instances/{instance}/bulkdata/{path}``: one large binary value (a BulkDataURI's target)."""

    audit_actions = {"GET": A.DOWNLOAD}

    @audited
    def get(self, request, study, series, instance, path):
        return wado.bulkdata(self, request, study=study, series=series, instance=instance, path=path)
