from django.urls import re_path

from dicom.api.views import DicomViewSet

# Paths answer with and without a trailing slash; a file_id is matched as text so that a malformed
# one answers the API's JSON 404, not Django's HTML one.
_FILE_ID = r"(?P<file_id>[^/]+)"

urlpatterns = [
    re_path(r"^upload/?$", DicomViewSet.as_view({"post": "upload"}), name="dicom-upload"),
    re_path(rf"^metadata/{_FILE_ID}/?$", DicomViewSet.as_view({"get": "metadata"}), name="dicom-metadata"),
    re_path(
        r"^anonymize/?$", DicomViewSet.as_view({"post": "anonymize_batch"}), name="dicom-anonymize-batch"
    ),
    re_path(
        rf"^anonymize/{_FILE_ID}/?$", DicomViewSet.as_view({"post": "anonymize"}), name="dicom-anonymize"
    ),
    re_path(rf"^download/{_FILE_ID}/?$", DicomViewSet.as_view({"get": "download"}), name="dicom-download"),
    re_path(rf"^status/{_FILE_ID}/?$", DicomViewSet.as_view({"get": "status"}), name="dicom-status"),
]
