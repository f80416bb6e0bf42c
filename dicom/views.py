"""Views outside the API: the preview image of a file, as the admin's pages show it.

Thin: the access rule is the API's (``selectors.get_visible_file``), the patient data rule is the
``dicom.view_phi`` permission, the audit row comes from ``responses.staff_operation``, the image
from ``services.previews``.
"""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from audit.models import AuditLog
from audit.services import Operation
from dicom.access import VIEW_PHI
from dicom.models import DicomFile
from dicom.responses import staff_operation
from dicom.services.previews import (
    PREVIEW_VARIANTS,
    REGIONS_VARIANT,
    Preview,
    get_preview,
    get_regions_preview,
    regions_image_file,
)
from dicom.services.selectors import get_visible_file


@require_GET
@login_required(login_url="admin:login")
def preview(request: HttpRequest, file_id: str, variant: str) -> HttpResponse:
    """Answer the PNG preview of one file, or 404 for a file the user may not see.

    Audited (``preview``): every full-size preview, every preview showing an original's pixels, and
    every refusal. Thumbnails of de-identified files are not, or each list page would add a row per file.
    The ``regions`` variant is always audited, see :func:`_regions_preview`.
    """
    if variant not in PREVIEW_VARIANTS:
        raise Http404("no such preview")
    with staff_operation(request, action=AuditLog.Action.PREVIEW, file_id=file_id) as op:
        dicom_file = get_visible_file(user=request.user, file_id=file_id)
        if variant == REGIONS_VARIANT:
            return _regions_preview(request, dicom_file, op=op)
        result = get_preview(
            dicom_file=dicom_file, variant=variant, show_original=request.user.has_perm(VIEW_PHI)
        )
        if not (variant == "full" or (result.is_image and not dicom_file.anonymized)):
            op.discard()
        elif not result.is_image:
            op.refuse(status_code=200, reason=f"{variant} preview not shown: {result.kind}")
        return _png_response(result)


def _regions_preview(request: HttpRequest, dicom_file: DicomFile, *, op: Operation) -> HttpResponse:
    """The full-size image with the burned-in text regions of ``dicom_file`` outlined. Always audited.

    A failed job's regions are drawn on its source's image, so the user must be able to see the
    source too (else the same audited 404). The audit row names the file whose pixels were shown
    (the source, with the job in the reason), so the source's own trail lists who saw them.
    """
    image_file = regions_image_file(dicom_file)
    if image_file is not None and image_file.pk != dicom_file.pk:
        op.file_id = image_file.id  # a refusal names the file the user could not see
        get_visible_file(user=request.user, file_id=image_file.pk)
    result = get_regions_preview(dicom_file=dicom_file, show_original=request.user.has_perm(VIEW_PHI))
    if not result.is_image:
        op.file_id = dicom_file.id
        op.refuse(status_code=200, reason=f"{REGIONS_VARIANT} preview not shown: {result.kind}")
    elif image_file is not None and image_file.pk != dicom_file.pk:
        op.reason = f"{REGIONS_VARIANT} preview of failed job {dicom_file.id}"
    return _png_response(result)


def _png_response(result: Preview) -> HttpResponse:
    response = HttpResponse(result.png, content_type="image/png")
    response["X-Preview-Kind"] = str(result.kind)
    # A rendered image never changes (files are immutable); a placeholder depends on the user or on a
    # file still processing. Either way, only the user's own browser may keep it.
    response["Cache-Control"] = "private, max-age=3600" if result.is_image else "private, no-cache"
    return response
