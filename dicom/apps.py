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
