"""Pages and images outside the API (the admin's previews); included at the site root."""

from django.urls import path

from dicom import views

urlpatterns = [
    path("dicom/files/<str:file_id>/preview/<str:variant>.png", views.preview, name="dicom-preview"),
]
