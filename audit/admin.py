from django.contrib import admin

from audit.models import AuditLog


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """The audit trail, read-only for everyone, superusers included."""

    list_display = ("timestamp", "username", "action", "success", "status_code", "file_id", "client_address")
    list_filter = ("action", "success", "timestamp")
    search_fields = ("username", "=file_id")
    date_hierarchy = "timestamp"
    list_select_related = False
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
