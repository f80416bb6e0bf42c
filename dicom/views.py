"""Views outside the API: the preview image of a file, as the admin's pages show it.

Thin: the access rule is the API's (``selectors.get_visible_file``), the patient data rule is the
``dicom.view_phi`` permission, the image comes from ``services.previews``.
"""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from audit.models import AuditLog
from audit.services import Actor, record
from dicom.access import VIEW_PHI
from dicom.models import DicomFile
from dicom.responses import client_address, visible_file_or_404
from dicom.services.previews import (
    PREVIEW_VARIANTS,
    REGIONS_VARIANT,
    Preview,
    get_preview,
    get_regions_preview,
    regions_image_file,
)


@require_GET
@login_required(login_url="admin:login")
def preview(request: HttpRequest, file_id: str, variant: str) -> HttpResponse:
    """Answer the PNG preview of one file, or 404 for a file the user may not see.

    Audited (``preview``): every full-size preview, every preview showing an original's pixels, and
    every refusal. Thumbnails of de-identified files are not, or each list page would add a row per file.
    The ``regions`` variant is always audited, see :func:`_regions_preview`.
    """
    actor = Actor(user=request.user, client_address=client_address(request))
    if variant not in PREVIEW_VARIANTS:
        raise Http404("no such preview")
    dicom_file = visible_file_or_404(request, file_id, actor=actor, action=AuditLog.Action.PREVIEW)
    if variant == REGIONS_VARIANT:
        return _regions_preview(request, dicom_file, actor=actor)

    result = get_preview(
        dicom_file=dicom_file, variant=variant, show_original=request.user.has_perm(VIEW_PHI)
    )
    if variant == "full" or (result.is_image and not dicom_file.anonymized):
        record(
            actor=actor,
            action=AuditLog.Action.PREVIEW,
            success=result.is_image,
            file_id=dicom_file.id,
            status_code=200,
            reason="" if result.is_image else f"{variant} preview not shown: {result.kind}",
        )
    return _png_response(result)


def _regions_preview(request: HttpRequest, dicom_file: DicomFile, *, actor: Actor) -> HttpResponse:
    """The full-size image with the burned-in text regions of ``dicom_file`` outlined. Always audited.

    A failed job's regions are drawn on its source's image, so the user must be able to see the
    source too (else the same audited 404). The audit row names the file whose pixels were shown
    (the source, with the job in the reason), so the source's own trail lists who saw them.
    """
    image_file = regions_image_file(dicom_file)
    if image_file is not None and image_file.pk != dicom_file.pk:
        visible_file_or_404(request, str(image_file.pk), actor=actor, action=AuditLog.Action.PREVIEW)
    result = get_regions_preview(dicom_file=dicom_file, show_original=request.user.has_perm(VIEW_PHI))
    shows_source = result.is_image and image_file is not None and image_file.pk != dicom_file.pk
    if shows_source:
        reason = f"{REGIONS_VARIANT} preview of failed job {dicom_file.id}"
    else:
        reason = "" if result.is_image else f"{REGIONS_VARIANT} preview not shown: {result.kind}"
    record(
        actor=actor,
        action=AuditLog.Action.PREVIEW,
        success=result.is_image,
        file_id=image_file.id if shows_source else dicom_file.id,
        status_code=200,
        reason=reason,
    )
    return _png_response(result)


def _png_response(result: Preview) -> HttpResponse:
    response = HttpResponse(result.png, content_type="image/png")
    response["X-Preview-Kind"] = str(result.kind)
    # A rendered image never changes (files are immutable); a placeholder depends on the user or on a
    # file still processing. Either way, only the user's own browser may keep it.
    response["Cache-Control"] = "private, max-age=3600" if result.is_image else "private, no-cache"
    return response
