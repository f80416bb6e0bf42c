from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/dicom/", include("dicom.api.urls")),
    path("", include("dicom.urls")),
]
