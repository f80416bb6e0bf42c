from django.apps import AppConfig


class DicomConfig(AppConfig):
    name = "dicom"
    verbose_name = "DICOM files"
    default_auto_field = "django.db.models.BigAutoField"
