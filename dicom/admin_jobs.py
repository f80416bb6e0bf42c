"""Read-only admin of bulk runs, their items and the workers' heartbeats.

Queued, running and failed jobs themselves are django-tasks-db's ``DBTaskResult`` admin (listed
with their status and filterable by it); these pages say which bulk run and which file a job
worked on, and which workers are alive.
"""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from dicom.models import BulkItem, BulkRun, WorkerHeartbeat


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(BulkRun)
class BulkRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "source",
        "status",
        "total",
        "done",
        "refused",
        "failed",
        "not_dicom",
        "operator_name",
        "created_at",
    )
    list_filter = ("status", "source")
    search_fields = ("=id", "operator_name")
    date_hierarchy = "created_at"


@admin.register(BulkItem)
class BulkItemAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "status", "source_file", "output_id", "output_path", "detail", "updated_at")
    list_filter = ("status",)
    search_fields = ("=run__id", "=output_id", "=source_file__id")
    list_select_related = ("run",)
    # Source paths can name patients (operators' folders): not shown in the list.
    exclude = ("source_path",)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("worker_id", "hostname", "pid", "started_at", "last_seen", "alive")

    @admin.display(boolean=True)
    def alive(self, obj: WorkerHeartbeat) -> bool:
        age = (timezone.now() - obj.last_seen).total_seconds()
        return age < settings.DICOM_WORKER_STALE_SECONDS
