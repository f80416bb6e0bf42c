from django.apps import AppConfig


class DimseConfig(AppConfig):
    name = "dimse"
    verbose_name = "DIMSE (DICOM network)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The forwarding rules hear of every stored file (dicom.services.events); the jobs, and
        # with them the forwarding job's give-up handler, are known to every process.
        from django.db.models.signals import post_delete, post_save

        from dicom.services import events
        from dimse import forwarding, tasks  # noqa: F401
        from dimse.models import Destination, ForwardingRule

        events.on_files_stored(forwarding.files_stored)
        for model in (ForwardingRule, Destination):
            for signal in (post_save, post_delete):
                signal.connect(
                    forwarding.forget_rules, sender=model, dispatch_uid=f"forget-rules-{model.__name__}"
                )
