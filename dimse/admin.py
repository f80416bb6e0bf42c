"""The staff admin of application entities: Django's model permissions decide who reads or writes."""

from django.contrib import admin

from dimse.models import ApplicationEntity


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
