from django.apps import AppConfig


class DimseConfig(AppConfig):
    name = "dimse"
    verbose_name = "DIMSE (DICOM network)"
    default_auto_field = "django.db.models.BigAutoField"
