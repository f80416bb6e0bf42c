"""The staff admin of application entities and forwarding: Django's model permissions decide who
reads or writes. The destinations' authorization header is write-only. DicomFile's list gets the
"Send to destination…" action (the same service and access rule as ``POST /api/dimse/send``)."""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.services import Actor
from dicom.admin import DicomFileAdmin, selected_files_page
from dicom.responses import client_address
from dicom.services.errors import DicomServiceError
from dimse import forwarding
from dimse.models import ApplicationEntity, Destination, ForwardingRule, Transfer


@admin.register(ApplicationEntity)
class ApplicationEntityAdmin(admin.ModelAdmin):
    list_display = (
        "ae_title",
        "account",
        "may_store",
        "may_query",
        "may_retrieve",
        "enabled",
        "host",
        "port",
    )
    list_filter = ("enabled", "may_store", "may_query", "may_retrieve")
    search_fields = ("ae_title", "description", "host")
    raw_id_fields = ("account",)
    readonly_fields = ("created_at",)
    fieldsets = (
        (None, {"fields": ("ae_title", "description", "account", "enabled", "created_at")}),
        ("Permissions", {"fields": ("may_store", "may_query", "may_retrieve")}),
        ("Address (for C-MOVE)", {"fields": ("host", "port")}),
    )


# --- forwarding ---------------------------------------------------------------------------------


class DestinationForm(forms.ModelForm):
    """The authorization header is write-only: never shown back; left empty, the stored one is kept."""

    authorization = forms.CharField(
        required=False,
        max_length=Destination._meta.get_field("authorization").max_length,
        widget=forms.PasswordInput(render_value=False),
        help_text="STOW-RS: the Authorization header sent (e.g. 'Bearer <token>'). Never shown again; "
        "leave empty to keep the current one.",
    )
    url = forms.URLField(
        label="base URL",
        required=False,
        assume_scheme="https",
        max_length=Destination._meta.get_field("url").max_length,
        help_text="STOW-RS: the DICOMweb root, e.g. https://host/dicomweb",
    )
    clear_authorization = forms.BooleanField(required=False, help_text="remove the stored authorization")

    class Meta:
        model = Destination
        fields = ("name", "kind", "enabled", "application_entity", "url", "authorization")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("clear_authorization"):
            cleaned["authorization"] = ""
        elif not cleaned.get("authorization"):
            cleaned["authorization"] = self.instance.authorization
        return cleaned


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    form = DestinationForm
    list_display = ("name", "kind", "enabled", "application_entity", "url", "authorization_set")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "url", "application_entity__ae_title")
    raw_id_fields = ("application_entity",)
    readonly_fields = ("created_at",)
    fieldsets = (
        (None, {"fields": ("name", "kind", "enabled", "created_at")}),
        ("DICOM AE (C-STORE)", {"fields": ("application_entity",)}),
        ("DICOMweb (STOW-RS)", {"fields": ("url", "authorization", "clear_authorization")}),
    )

    @admin.display(description="authorization")
    def authorization_set(self, obj: Destination) -> str:
        return "set" if obj.authorization else "—"

    def get_fieldsets(self, request: HttpRequest, obj: Destination | None = None):
        if self.has_change_permission(request, obj) or (obj is None and self.has_add_permission(request)):
            return self.fieldsets
        # A view-only page shows every field as text: the secret only as set or not.
        return (
            (None, {"fields": ("name", "kind", "enabled", "created_at")}),
            ("DICOM AE (C-STORE)", {"fields": ("application_entity",)}),
            ("DICOMweb (STOW-RS)", {"fields": ("url", "authorization_set")}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Destination | None = None):
        return (*super().get_readonly_fields(request, obj), "authorization_set")


@admin.register(ForwardingRule)
class ForwardingRuleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "trigger", "called_ae_title", "destination", "enabled")
    list_filter = ("trigger", "enabled", "destination")
    list_select_related = ("destination",)
    readonly_fields = ("created_at",)
    fields = ("trigger", "called_ae_title", "destination", "enabled", "created_at")


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    """Transfers are made by the rules and manual sends, and changed only by their jobs: read-only."""

    list_display = (
        "id",
        "file",
        "destination",
        "trigger",
        "status",
        "attempts",
        "detail",
        "created_at",
        "sent_at",
    )
    list_filter = ("status", "trigger", "destination")
    list_select_related = ("destination",)
    search_fields = ("=file__id", "=job_id")
    show_full_result_count = False
    fields = (
        "file",
        "destination",
        "rule",
        "trigger",
        "requested_by",
        "status",
        "detail",
        "attempts",
        "job_id",
        "created_at",
        "updated_at",
        "sent_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Transfer | None = None) -> bool:
        return False


class SendForm(forms.Form):
    destination = forms.ModelChoiceField(
        queryset=Destination.objects.filter(enabled=True).select_related("application_entity"),
        empty_label=None,
    )


@admin.action(description="Send to destination…", permissions=["view"])
def send_to_destination(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet):
    """Ask for the destination, then queue one transfer per selected file (all or none, audited)."""
    total = queryset.count()
    if total > forwarding.MAX_FILES_PER_REQUEST:
        modeladmin.message_user(
            request,
            f"{total} files selected: at most {forwarding.MAX_FILES_PER_REQUEST} at once.",
            messages.ERROR,
        )
        return None
    form = SendForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        destination = form.cleaned_data["destination"]
        actor = Actor(user=request.user, client_address=client_address(request))
        try:
            transfers = forwarding.request_send(
                actor=actor,
                request=forwarding.SendRequest(
                    file_ids=list(queryset.values_list("pk", flat=True)), destination=str(destination.pk)
                ),
            )
        except DicomServiceError as error:
            modeladmin.message_user(request, f"Nothing sent: {error.detail}.", messages.ERROR)
            return None
        plural = "s" if len(transfers) != 1 else ""
        modeladmin.message_user(
            request,
            f"Queued {len(transfers)} file{plural} for sending to {destination.name}.",
            messages.SUCCESS,
        )
        return None
    return selected_files_page(
        modeladmin,
        request,
        queryset,
        title="Send selected files to a destination",
        form=form,
        action_name="send_to_destination",
        template="admin/dimse/send_to_destination.html",
    )


# The files' admin is the dicom app's; the action is this app's (dicom imports nothing of dimse).
DicomFileAdmin.actions = (*DicomFileAdmin.actions, send_to_destination)
