from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dicom import health

urlpatterns = [
    path("admin/", admin.site.urls),
    # Probes (no credentials); dicom.health.ProbeMiddleware answers them first, whatever the Host.
    re_path(r"^healthz/?$", health.healthz, name="healthz"),
    re_path(r"^readyz/?$", health.readyz, name="readyz"),
    path("api/dicom/", include("dicom.api.urls")),
    # Forwarding: manual sends and their transfers (dimse.api).
    path("api/dimse/", include("dimse.api")),
    path("dicomweb/", include("dicomweb.urls")),
    path("viewer/", include("dicomweb.viewer_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("dicom.urls")),
]

# Failures no view handled: JSON, and 503 (not 500) while the database cannot be reached.
handler500 = "dicomsite.errors.server_error"
