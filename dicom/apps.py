from django.apps import AppConfig


class DicomConfig(AppConfig):
    name = "dicom"
    verbose_name = "DICOM files"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import pydicom.config

        # Configured once at start-up, never per request. Reading does not re-validate every value
        # against its VR (the validator has already checked the structure, and a value that breaks
        # VR rules must still be readable to be de-identified); writing keeps pydicom's checks.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

        # The admin of the bulk runs and workers lives beside dicom/admin.py, in its own module.
        import dicom.admin_jobs  # noqa: F401
