import csv
from collections.abc import Iterable, Iterator

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path

from audit.models import AuditLog
from audit.services import Actor, operation

CSV_COLUMNS = (
    "timestamp",
    "username",
    "action",
    "success",
    "status_code",
    "file_id",
    "client_address",
    "reason",
    "request_id",
    "count",
    "targets",
)


class _Echo:
    """A file-like object whose write() hands the line back, for csv.writer to stream through."""

    def write(self, value: str) -> str:
        return value


def _safe_cell(value: object) -> object:
    # A cell starting with = + - @ is a formula to a spreadsheet; a quote makes it text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _csv_value(value: object) -> object:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list):  # targets
        return " ".join(str(item) for item in value)
    return value


def csv_response(rows: Iterable[Iterable[object]], *, filename: str) -> StreamingHttpResponse:
    """Stream ``rows`` (the first one being the header) as a CSV attachment, never all in memory."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        for row in rows:
            yield writer.writerow([_safe_cell(cell) for cell in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """The audit trail, read-only for everyone, superusers included, with a CSV export of what is filtered.

    The export is itself audited (an ``export`` row without a file id whose reason says how many rows
    were exported): who took a copy of the trail is something a privacy officer asks.
    """

    # The export's columns, less the request id (which only matters to join rows of one request).
    list_display = tuple(column for column in CSV_COLUMNS if column not in ("request_id", "targets"))
    list_filter = ("action", "success", "user", "timestamp")
    search_fields = ("username", "=file_id")
    search_help_text = "Username, or an exact file id."
    list_select_related = False
    # The trail grows with every API call: one COUNT of the filtered rows per page, no date_hierarchy
    # (its year/month links are a DISTINCT over the whole table); the timestamp filter covers dates.
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_csv_view),
                name="{}_{}_export".format(*info),
            ),
            *super().get_urls(),
        ]

    def export_csv_view(self, request: HttpRequest) -> StreamingHttpResponse:
        """The rows the changelist shows with the same query string (filters, search, ordering), all pages."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        actor = Actor(user=request.user, client_address=request.META.get("REMOTE_ADDR") or None)
        with operation(actor=actor, action=AuditLog.Action.EXPORT) as op:
            queryset = self.get_changelist_instance(request).queryset
            op.reason = f"audit trail CSV export of {queryset.count()} rows"
        return csv_response(self._rows(queryset), filename="audit-trail.csv")

    @staticmethod
    def _rows(queryset) -> Iterator[list]:
        yield list(CSV_COLUMNS)
        for row in queryset.values_list(*CSV_COLUMNS).iterator(chunk_size=5000):
            yield [_csv_value(value) for value in row]
