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

        check_default_options()

        # The admin of the bulk runs and workers lives beside dicom/admin.py, in its own module.
        # The tasks, and with them the job bodies, which register how to give up their work
        # (dicom.services.task_queue): every process, web or worker, knows them before its first job.
        from dicom import admin_jobs, tasks  # noqa: F401


def check_default_options() -> None:
    """Stop start-up on a ``DICOM_DEID_DEFAULT_OPTIONS`` that every request would fail on."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from dicom.services.deid import OPTION_NAMES, DeidOptions

    try:
        DeidOptions.from_names(settings.DICOM_DEID_DEFAULT_OPTIONS)
    except ValueError as error:
        raise ImproperlyConfigured(
            f"DICOM_DEID_DEFAULT_OPTIONS is not a valid set of options ({error}); known options: "
            f"{', '.join(OPTION_NAMES)}"
        ) from None
