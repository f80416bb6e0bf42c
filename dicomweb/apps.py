from django.apps import AppConfig


class DicomWebConfig(AppConfig):
    name = "dicomweb"
    verbose_name = "DICOMweb"
    default_auto_field = "django.db.models.BigAutoField"
