"""The staff admin of DICOM files: a fast list with thumbnails, a read-only page per file, actions.

Roles are plain Django permissions (see the README, "Staff admin and roles"):
``dicom.view_dicomfile`` to browse, ``dicom.change_dicomfile`` to run "Anonymize selected", and
``dicom.view_phi`` to see patient data of originals (files not de-identified). Without ``view_phi``
the patient fields of an original are masked everywhere here and its image is withheld; de-identified
files show as they are, since what they hold is no longer patient data.
"""

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.tag import Tag
from pydicom.uid import UID

from audit.admin import csv_response
from audit.models import AuditLog
from audit.services import Actor, operation
from dicom.access import PATIENT_DATA_KEYS as PHI_KEYS
from dicom.access import VIEW_PHI
from dicom.forms import DeidOptionsForm
from dicom.models import DicomFile
from dicom.responses import client_address, staff_operation, stored_file_response
from dicom.services.anonymization import request_anonymization
from dicom.services.errors import FileNotReadyError
from dicom.services.metadata import METADATA_KEYWORDS
from dicom.services.previews import REGIONS_VARIANT, pixel_text_report, recorded_regions, regions_image_file
from dicom.services.selectors import get_visible_file
from dicomweb import viewer

PHI_MASK = "•••"
# "Anonymize selected" queues one job per file inside the request; past this many, use the command.
MAX_BULK_ANONYMIZE = 1000
# Rows of a file's own audit trail shown on its page; the rest is one click away in the trail itself.
AUDIT_ROWS_ON_PAGE = 50

METADATA_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Patient", ("patient_id", "patient_name", "patient_birth_date", "patient_sex", "patient_age")),
    ("Study", ("study_instance_uid", "study_date", "study_time", "study_description", "accession_number")),
    (
        "Series",
        (
            "series_instance_uid",
            "series_number",
            "series_description",
            "modality",
            "body_part_examined",
            "manufacturer",
            "manufacturer_model_name",
            "institution_name",
        ),
    ),
    (
        "Image",
        (
            "sop_instance_uid",
            "sop_class_uid",
            "instance_number",
            "rows",
            "columns",
            "number_of_frames",
            "bits_allocated",
            "photometric_interpretation",
            "transfer_syntax_uid",
            "burned_in_annotation",
            "patient_identity_removed",
        ),
    ),
)
_UID_KEYS = frozenset({"sop_class_uid", "transfer_syntax_uid"})


def may_see_phi(request: HttpRequest) -> bool:
    return request.user.has_perm(VIEW_PHI)


def shows_phi(dicom_file: DicomFile, *, show_phi: bool) -> bool:
    """Whether patient fields of this file may be shown: always for de-identified files."""
    return show_phi or dicom_file.anonymized


def metadata_groups(dicom_file: DicomFile, *, show_phi: bool) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The file's metadata as (group, [(attribute name, tag, value)]), patient fields masked if need be."""
    metadata = dicom_file.metadata or {}
    visible = shows_phi(dicom_file, show_phi=show_phi)
    seen: set[str] = set()
    groups = []
    for title, keys in METADATA_GROUPS:
        rows = [_metadata_row(key, metadata.get(key), masked=key in PHI_KEYS and not visible) for key in keys]
        seen.update(keys)
        groups.append((title, rows))
    others = [key for key in metadata if key not in seen]
    if others:
        groups.append(
            (
                "Other",
                [_metadata_row(key, metadata[key], masked=key in PHI_KEYS and not visible) for key in others],
            )
        )
    return groups


def _metadata_row(key: str, value: object, *, masked: bool) -> tuple[str, str, str]:
    keyword = METADATA_KEYWORDS.get(key)
    tag = tag_for_keyword(keyword) if keyword else None
    if key == "transfer_syntax_uid":
        name, tag_text = "Transfer Syntax UID", "(0002,0010)"
    elif tag is not None:
        name, tag_text = dictionary_description(tag), f"({Tag(tag).group:04X},{Tag(tag).element:04X})"
    else:
        name, tag_text = key.replace("_", " ").capitalize(), ""
    if masked:
        text = PHI_MASK
    elif value is None:
        text = "—"
    elif isinstance(value, list):
        text = ", ".join(str(item) for item in value)
    elif key in _UID_KEYS and value:
        uid = UID(str(value))
        text = f"{uid} ({uid.name})" if uid.name != str(uid) else str(uid)
    else:
        text = str(value)
    return name, tag_text, text


def selected_files_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    title: str,
    form,
    action_name: str,
    template: str,
) -> TemplateResponse:
    """The intermediate page of an action on selected DICOM files (a template extending
    ``admin/dicom/dicomfile/selected_files_action.html``): its form, and the files it will act on."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.opts,
        "form": form,
        "files": list(
            queryset.select_related(None)
            .order_by("-created_at")
            .only("id", "status", "anonymized", "modality")
        ),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action_name": action_name,
    }
    return TemplateResponse(request, template, context)


@admin.register(DicomFile)
class DicomFileAdmin(admin.ModelAdmin):
    """Files: browse, look at one, download it (audited), and anonymize a selection in the background."""

    list_display_links = ("id",)
    list_filter = ("modality", "study_type", "status", "anonymized", "owner", "created_at")
    # Only to show the search box; get_search_results() does the (exact, indexed) matching.
    search_fields = ("=id", "=study_instance_uid", "=series_instance_uid", "=sop_instance_uid")
    list_select_related = ("owner",)
    # One COUNT of the filtered rows per page; never a second one over the whole table.
    show_full_result_count = False
    list_per_page = 50
    ordering = ("-created_at",)
    search_help_text = (
        "Exact file id, study/series/SOP instance UID, or patient ID (with the patient data permission)."
    )
    actions = ("anonymize_selected", "export_selected_csv")
    fields = (
        "id",
        "status",
        "failure_detail",
        "anonymized",
        "study_type",
        "modality",
        "owner",
        "source",
        "size",
        "sha256",
        "transfer_syntax_uid",
        "deid_options",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    # --- permissions: a read-only admin, with one action for those allowed to change files ---

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # files come in through the API and the import command

    def has_change_permission(self, request: HttpRequest, obj: DicomFile | None = None) -> bool:
        return False  # stored files are immutable; the page is a view

    def has_delete_permission(self, request: HttpRequest, obj: DicomFile | None = None) -> bool:
        return False  # deleting must also remove stored bytes and previews: not an admin click

    def has_anonymize_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("dicom.change_dicomfile")

    # --- the list ---

    def get_list_display(self, request: HttpRequest):
        show_phi = may_see_phi(request)

        @admin.display(description="patient ID")
        def patient(obj: DicomFile) -> str:
            return (obj.patient_id or "—") if shows_phi(obj, show_phi=show_phi) else PHI_MASK

        @admin.display(description="viewer")
        def viewer(obj: DicomFile) -> str:
            url = _viewer_url(obj, show_phi=show_phi)
            return (
                format_html('<a href="{}" target="_blank" rel="noopener">open study</a>', url) if url else "—"
            )

        return (
            "thumbnail",
            "id",
            "modality",
            "study_type",
            "status",
            "anonymized",
            patient,
            "owner",
            "file_size",
            "created_at",
            viewer,
        )

    @admin.display(description="preview")
    def thumbnail(self, obj: DicomFile) -> str:
        return format_html(
            '<img class="dicom-thumb" src="{}" loading="lazy" width="64" height="64" alt="preview of {}">',
            reverse("dicom-preview", args=[obj.id, "thumb"]),
            obj.id,
        )

    @admin.display(description="size", ordering="size")
    def file_size(self, obj: DicomFile) -> str:
        return filesizeformat(obj.size) if obj.size is not None else "—"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """Exact matches on indexed columns: file id, study/series/SOP instance UID, patient ID (view_phi)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(study_instance_uid=term) | Q(series_instance_uid=term) | Q(sop_instance_uid=term)
        with contextlib.suppress(ValueError):
            condition |= Q(pk=uuid.UUID(term))
        if may_see_phi(request):
            condition |= Q(patient_id=term)
        return queryset.filter(condition), False

    # --- one file's page ---

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="{}_{}_download".format(*info),
            ),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        dicom_file = self.get_object(request, unquote(object_id))
        if dicom_file is None or not self.has_view_permission(request, dicom_file):
            return super().change_view(request, object_id, form_url, extra_context)
        show_phi = may_see_phi(request)
        with staff_operation(request, action=AuditLog.Action.VIEW, file_id=dicom_file.id):
            context = self._file_context(dicom_file, show_phi=show_phi)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **context})

    def _file_context(self, dicom_file: DicomFile, *, show_phi: bool) -> dict:
        return {
            "preview_url": reverse("dicom-preview", args=[dicom_file.id, "full"]),
            "metadata_groups": metadata_groups(dicom_file, show_phi=show_phi),
            "phi_masked": not shows_phi(dicom_file, show_phi=show_phi),
            "preview_note": _preview_note(dicom_file, show_phi=show_phi),
            "burned_in_text": burned_in_text(dicom_file, show_phi=show_phi),
            "derived_files": list(dicom_file.derived_files.order_by("-created_at")[:100]),
            "audit_rows": list(AuditLog.objects.filter(file_id=dicom_file.id)[:AUDIT_ROWS_ON_PAGE]),
            "audit_trail_url": reverse("admin:audit_auditlog_changelist") + f"?q={dicom_file.id}",
            "download_url": reverse("admin:dicom_dicomfile_download", args=[dicom_file.id]),
            "download_refusal": _download_refusal(dicom_file, show_phi=show_phi),
            "viewer_url": _viewer_url(dicom_file, show_phi=show_phi),
        }

    def download_view(self, request: HttpRequest, object_id: str):
        """Stream the stored file, as the API does; refused for an original without view_phi. Audited."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        with staff_operation(request, action=AuditLog.Action.DOWNLOAD, file_id=object_id) as op:
            dicom_file = get_visible_file(user=request.user, file_id=object_id)
            refusal = _download_refusal(dicom_file, show_phi=may_see_phi(request))
            if not refusal:
                return stored_file_response(dicom_file)
            op.refuse(status_code=409 if not dicom_file.is_ready else 403, reason=refusal)
        self.message_user(request, f"Not downloaded: {refusal}.", messages.ERROR)
        return HttpResponseRedirect(reverse("admin:dicom_dicomfile_change", args=[dicom_file.id]))

    # --- actions ---

    @admin.action(description="Anonymize selected files", permissions=["anonymize"])
    def anonymize_selected(self, request: HttpRequest, queryset: QuerySet):
        """Ask for the de-identification options, then queue one job per selected file."""
        total = queryset.count()
        if total > MAX_BULK_ANONYMIZE:
            self.message_user(
                request,
                f"{total} files selected: at most {MAX_BULK_ANONYMIZE} can be anonymized at once from the admin.",
                messages.ERROR,
            )
            return None
        form = DeidOptionsForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            queued, skipped = self._anonymize(request, queryset, form.cleaned_data["options"])
            text = f"Queued {queued} file{'s' if queued != 1 else ''} for anonymization."
            if skipped:
                text += f" Skipped {skipped} not completed (processing or failed)."
            self.message_user(request, text, messages.SUCCESS if queued else messages.WARNING)
            return None
        return selected_files_page(
            self,
            request,
            queryset,
            title="Anonymize selected files",
            form=form,
            action_name="anonymize_selected",
            template="admin/dicom/dicomfile/anonymize_selected.html",
        )

    def _anonymize(self, request: HttpRequest, queryset: QuerySet, options) -> tuple[int, int]:
        actor = Actor(user=request.user, client_address=client_address(request))
        queued = skipped = 0
        with operation(actor=actor, action=AuditLog.Action.BULK_ANONYMIZE) as op:
            for source in queryset.order_by("created_at"):
                try:
                    request_anonymization(actor=actor, source=source, options=options)  # audits each
                except FileNotReadyError:
                    skipped += 1
                else:
                    queued += 1
            op.reason = f"admin action: {queued} queued, {skipped} skipped"
            if not queued:
                op.refuse(status_code=200, reason=op.reason)
        return queued, skipped

    @admin.action(description="Export selected files as CSV", permissions=["view"])
    def export_selected_csv(self, request: HttpRequest, queryset: QuerySet):
        """One CSV row per file; patient IDs of originals masked without view_phi. Audited as one row."""
        show_phi = may_see_phi(request)
        with staff_operation(request, action=AuditLog.Action.EXPORT) as op:
            op.reason = f"admin CSV export of {queryset.count()} files" + (
                " with patient IDs" if show_phi else ""
            )
        rows = _file_rows(queryset.select_related("owner").order_by("-created_at"), show_phi=show_phi)
        return csv_response(rows, filename="dicom-files.csv")


FILE_CSV_COLUMNS = (
    "file_id",
    "status",
    "anonymized",
    "modality",
    "study_type",
    "owner",
    "size",
    "created_at",
    "source_file_id",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "patient_id",
)


def _file_rows(queryset: QuerySet, *, show_phi: bool) -> Iterator[list]:
    yield list(FILE_CSV_COLUMNS)
    for dicom_file in queryset.iterator(chunk_size=2000):
        patient_id = dicom_file.patient_id if shows_phi(dicom_file, show_phi=show_phi) else PHI_MASK
        yield [
            dicom_file.id,
            dicom_file.status,
            dicom_file.anonymized,
            dicom_file.modality,
            dicom_file.study_type,
            dicom_file.owner.get_username() if dicom_file.owner else "",
            dicom_file.size if dicom_file.size is not None else "",
            dicom_file.created_at.isoformat(),
            dicom_file.source_id or "",
            dicom_file.study_instance_uid,
            dicom_file.series_instance_uid,
            dicom_file.sop_instance_uid,
            patient_id,
        ]


@dataclass(frozen=True)
class BurnedInText:
    """The page's "Burned-in text" section: what happened, where (never what the text said), the image.

    ``regions`` rows are ``(kind, frame, x, y, width, height)`` in the image's pixels, kind "text" (found
    by the scan, on that frame) or "device" (configured for the device, every frame). ``preview_url``
    is the image with the boxes drawn, "" when there is nothing to draw; ``drawn`` says which boxes it
    shows and ``note`` why it may be withheld.
    """

    outcome: str  # "cleaned", "refused" or "not checked"
    summary: str
    regions: list[tuple[str, int | str, int, int, int, int]]
    preview_url: str = ""
    drawn: str = ""
    note: str = ""


def burned_in_text(dicom_file: DicomFile, *, show_phi: bool) -> BurnedInText | None:
    """The section for a file whose scan recorded regions or was skipped on request; None otherwise."""
    report = pixel_text_report(dicom_file)
    text_regions, device_regions = recorded_regions(report)
    if report.get("skipped") == "accept_burned_in_annotation":
        return BurnedInText(
            outcome="not checked",
            summary=(
                "Pixels not checked: de-identified with accept_burned_in_annotation, so the pixel data was "
                "left as it is and Patient Identity Removed (0012,0062) is NO."
            ),
            regions=[],
        )
    if not (text_regions or device_regions):
        return None
    regions: list[tuple[str, int | str, int, int, int, int]] = [("text", *region) for region in text_regions]
    regions += [("device", "every", *region) for region in device_regions]
    found_on = _on_frames(region[0] for region in text_regions)
    frames = report.get("number_of_frames")
    of_frames = f" of {frames}" if isinstance(frames, int) and frames > 1 else ""
    scanned = ", ".join(str(frame) for frame in report.get("scanned_frames") or ())
    preview_url = reverse("dicom-preview", args=[dicom_file.id, REGIONS_VARIANT])
    if report.get("cleaned"):
        parts = []
        if text_regions:
            parts.append(f"{_counted(len(text_regions), 'region')} where the scan found text, on {found_on}")
        if device_regions:
            parts.append(f"{_counted(len(device_regions), 'region')} configured for the device")
        return BurnedInText(
            outcome="cleaned",
            summary=(
                f"Cleaned: {_counted(len(regions), 'region')} blanked on every frame{of_frames} "
                f"({'; '.join(parts)}). The stored file's pixels no longer show the text."
            ),
            regions=regions,
            preview_url=preview_url,
            drawn=(
                "Frame 1 of this file after cleaning, every region outlined (each was blanked on every "
                "frame): red where the scan found text, cyan for the device's regions."
            ),
        )
    is_job = dicom_file.status == DicomFile.Status.FAILED
    image_file = regions_image_file(dicom_file)
    elsewhere = any(region[0] != 1 for region in text_regions)
    note = ""
    if image_file is not None and image_file.is_ready and not shows_phi(image_file, show_phi=show_phi):
        note = (
            "Image withheld: the boxes lie on the source, an original with patient data, shown only with "
            "the patient data permission."
        )
    return BurnedInText(
        outcome="refused",
        summary=(
            f"Refused: burned-in text was found in {_counted(len(text_regions), 'region')}, on "
            f"{found_on}{of_frames} (frames scanned: {scanned or '—'})."
            + (" Nothing was released; the boxes refer to the source file's image." if is_job else "")
        ),
        regions=regions,
        preview_url=preview_url,
        drawn=(
            f"Frame 1 of the {'source' if is_job else 'file'}, with the regions found on frame 1 outlined in red"
            + ("; regions found on other frames are listed above, not drawn." if elsewhere else ".")
        ),
        note=note,
    )


def _on_frames(frames: Iterable[int]) -> str:
    numbers = sorted(set(frames))
    return ("frame " if len(numbers) == 1 else "frames ") + ", ".join(str(frame) for frame in numbers)


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _preview_note(dicom_file: DicomFile, *, show_phi: bool) -> str:
    """A caption for what the page can tell without rendering; the image itself says why it failed."""
    if dicom_file.is_ready and not shows_phi(dicom_file, show_phi=show_phi):
        return "Preview withheld: this is an original with patient data, shown only with the patient data permission."
    return ""


def _viewer_url(dicom_file: DicomFile, *, show_phi: bool) -> str | None:
    """The OHIF viewer's page for the file's study, for a stored file the user may see in full."""
    if not dicom_file.is_ready or not shows_phi(dicom_file, show_phi=show_phi):
        return None
    return viewer.study_url(dicom_file.study_instance_uid)


def _download_refusal(dicom_file: DicomFile, *, show_phi: bool) -> str:
    """Why this user may not download this file from the admin, or "" if they may."""
    if not dicom_file.is_ready:
        return f"the file is {dicom_file.status}"
    if not shows_phi(dicom_file, show_phi=show_phi):
        return "an original with patient data needs the patient data permission"
    return ""
