"""Preview images of stored files for the admin, rendered once and cached in storage.

A preview is the first frame rendered by :func:`dicom.services.rendering.render_png`, in two variants:
``thumb`` (longer side at most 128 px, for the file list) and ``full`` (at most 1024 px, for one file's
page). The first request renders it and stores the PNG under ``storage.preview_key_for(...)``; later
requests read it back. Files never change once completed, so a cached preview never goes stale.

What cannot be rendered comes back as a placeholder PNG that says why (no image in the file, pixel data
that cannot be decoded, a file still processing, an original withheld from a user without the patient
data permission). Placeholders are not cached: they are cheap, and a reason that depends on the user or
on a file still processing must not outlive it.

A third variant, ``regions``, is the full-size image with outlines where burned-in text was found
(:func:`get_regions_preview`). It is rendered on every request and never cached: a failed job draws
on its source's image, an original, and a copy of it kept under the job's id would outlive the
source's own previews.
"""

import enum
import io
import logging
from dataclasses import dataclass

from PIL import Image, ImageDraw

from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.rendering import NoPixelDataError, RenderError, render_placeholder_png, render_png

logger = logging.getLogger(__name__)

# Longest side in pixels of each variant; None would mean the image's own size.
VARIANT_SIZES: dict[str, int] = {"thumb": 128, "full": 1024}
# The full-size image with the burned-in text regions outlined; its size is the "full" variant's.
REGIONS_VARIANT = "regions"
PREVIEW_VARIANTS: tuple[str, ...] = (*VARIANT_SIZES, REGIONS_VARIANT)
# The side of a placeholder per variant: big enough for its text to be read.
_PLACEHOLDER_SIZES: dict[str, int] = {"thumb": 128, "full": 512, REGIONS_VARIANT: 512}
WITHHELD_TEXT = "preview withheld: original with patient data"
# Outline colours: red for text found by the scan, cyan for the regions configured for the device.
TEXT_REGION_COLOUR = (255, 0, 0)
DEVICE_REGION_COLOUR = (0, 200, 255)


class PreviewKind(enum.StrEnum):
    IMAGE = "image"  # the rendered pixel data
    NO_IMAGE = "no-image"  # the file holds no image (SR, RT plan...)
    ERROR = "error"  # the pixel data cannot be decoded; ``reason`` says why
    WITHHELD = "withheld"  # an original, and the user may not see patient data
    NOT_READY = "not-ready"  # processing or failed: nothing stored to render
    NO_REGIONS = "no-regions"  # the regions variant of a file where no burned-in text was recorded


@dataclass(frozen=True)
class Preview:
    """A PNG to send, what it shows, and (for anything but an image) why, free of patient data."""

    png: bytes
    kind: PreviewKind
    reason: str = ""
    cached: bool = False

    @property
    def is_image(self) -> bool:
        return self.kind == PreviewKind.IMAGE


def get_preview(*, dicom_file: DicomFile, variant: str, show_original: bool) -> Preview:
    """Return the ``variant`` preview of ``dicom_file``, rendering and caching it on first use.

    ``show_original`` says whether the caller may see the image of a file that is not de-identified
    (the ``dicom.view_phi`` permission); when it is false such a file gets the "withheld" placeholder.
    Access to the file itself is the caller's business (``selectors.get_visible_file``).

    Side effects: on a cache miss, stores the PNG under ``storage.preview_key_for(file, variant)`` and,
    for the thumbnail, records that key in ``dicom_file.preview_key``. Raises ``ValueError`` for an
    unknown variant. Render failures never raise: they come back as a placeholder with the reason.
    """
    if variant not in VARIANT_SIZES:
        raise ValueError(f"unknown preview variant {variant!r}; expected one of {sorted(VARIANT_SIZES)}")
    if not dicom_file.is_ready:
        if dicom_file.status == DicomFile.Status.PROCESSING:
            reason = "file is processing: no image yet"
        else:
            reason = f"file is {dicom_file.status}: no image"
        return _placeholder(PreviewKind.NOT_READY, reason, variant)
    if not dicom_file.anonymized and not show_original:
        return _placeholder(PreviewKind.WITHHELD, WITHHELD_TEXT, variant)

    key = storage.preview_key_for(dicom_file.id, variant=variant)
    if storage.exists(key):
        with storage.open_stored(key) as handle:
            return Preview(png=handle.read(), kind=PreviewKind.IMAGE, cached=True)

    rendered = _render_stored(dicom_file, variant=variant)
    if not rendered.is_image:
        return rendered
    storage.store_bytes(data=rendered.png, key=key)
    if variant == "thumb" and dicom_file.preview_key != key:
        # A plain UPDATE of one column: no save() of a row another process may be changing.
        DicomFile.objects.filter(pk=dicom_file.pk).update(preview_key=key)
        dicom_file.preview_key = key
    return rendered


def regions_image_file(dicom_file: DicomFile) -> DicomFile | None:
    """The file whose image the burned-in text regions of ``dicom_file`` were found on.

    A completed file's regions are its own (a cleaned file: where its pixels were blanked). A failed
    de-identification job stored nothing: its regions are where the scan found text on its source,
    an original; None when that source is gone. Reads the ``source`` row; no other side effect.
    """
    if dicom_file.status == DicomFile.Status.FAILED:
        return dicom_file.source
    return dicom_file


def get_regions_preview(*, dicom_file: DicomFile, show_original: bool) -> Preview:
    """Return frame 1 of the image the regions of ``dicom_file`` refer to, with those regions outlined.

    The regions come from ``deid_report["pixel_text"]`` (image pixels, frames counted from 1) and are
    scaled to the "full" variant's size. Which boxes are drawn: when the file was cleaned, every text
    region (whatever frame it was found on) and every device region, since all were blanked on every
    frame, frame 1 included; otherwise (a refused job) only the text regions found on frame 1, the
    frame shown, plus any device regions. Outlines are drawn just outside each box, so what lies inside
    stays visible. The image is :func:`regions_image_file`'s: for a failed job its source, withheld
    (placeholder) when it is an original and ``show_original`` is false, as :func:`get_preview` does.
    Access to the files is the caller's business.

    No side effects: nothing is stored. Never raises for a file that cannot be shown: a placeholder
    says why (no regions recorded, source gone or not ready, withheld, render failure).
    """
    variant = REGIONS_VARIANT
    report = pixel_text_report(dicom_file)
    text_regions, device_regions = recorded_regions(report)
    if not (text_regions or device_regions):
        return _placeholder(PreviewKind.NO_REGIONS, "no burned-in text regions recorded", variant)
    image_file = regions_image_file(dicom_file)
    if image_file is None:
        return _placeholder(PreviewKind.NOT_READY, "the source file is gone: no image", variant)
    if not image_file.is_ready:
        return _placeholder(PreviewKind.NOT_READY, f"file is {image_file.status}: no image", variant)
    if not image_file.anonymized and not show_original:
        return _placeholder(PreviewKind.WITHHELD, WITHHELD_TEXT, variant)
    metadata = image_file.metadata or {}
    rows, columns = metadata.get("rows"), metadata.get("columns")
    if not (isinstance(rows, int) and isinstance(columns, int) and rows > 0 and columns > 0):
        # Without the image's own size the boxes cannot be placed on a scaled-down rendering.
        return _placeholder(
            PreviewKind.ERROR, "cannot draw the regions: the image size is not recorded", variant
        )

    rendered = _render_stored(image_file, variant=variant)
    if not rendered.is_image:
        return rendered
    if not report.get("cleaned"):
        text_regions = [region for region in text_regions if region[0] == 1]
    boxes = [(region[1:], TEXT_REGION_COLOUR) for region in text_regions]
    boxes += [(region, DEVICE_REGION_COLOUR) for region in device_regions]
    return Preview(png=_outlined(rendered.png, boxes, rows=rows, columns=columns), kind=PreviewKind.IMAGE)


def pixel_text_report(dicom_file: DicomFile) -> dict:
    """What the burned-in text scan recorded for ``dicom_file`` (``deid_report["pixel_text"]``), or {}."""
    report = (dicom_file.deid_report or {}).get("pixel_text")
    return report if isinstance(report, dict) else {}


def recorded_regions(report: dict) -> tuple[list[list[int]], list[list[int]]]:
    """The text regions ``[frame (from 1), left, top, width, height]`` and device regions
    ``[left, top, width, height]`` of a :func:`pixel_text_report`; malformed entries are left out."""
    return _regions(report.get("text_regions"), length=5), _regions(report.get("device_regions"), length=4)


def _regions(value: object, *, length: int) -> list[list[int]]:
    # Written by the engine, so well formed; a row edited by hand must not break the page.
    if not isinstance(value, list):
        return []
    return [
        list(region)
        for region in value
        if isinstance(region, list) and len(region) == length and all(isinstance(n, int) for n in region)
    ]


def _outlined(
    png: bytes, boxes: list[tuple[list[int], tuple[int, int, int]]], *, rows: int, columns: int
) -> bytes:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale_x, scale_y = image.width / columns, image.height / rows
    line = max(2, round(max(image.size) / 256))
    draw = ImageDraw.Draw(image)
    for (left, top, width, height), colour in boxes:
        x0, y0 = round(left * scale_x), round(top * scale_y)
        x1, y1 = round((left + width) * scale_x), round((top + height) * scale_y)
        # ImageDraw draws the outline inside the given box: grow it by the line so the box stays clear.
        draw.rectangle((x0 - line, y0 - line, x1 + line - 1, y1 + line - 1), outline=colour, width=line)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _render_stored(dicom_file: DicomFile, *, variant: str) -> Preview:
    """Render the stored file's first frame at ``variant``'s size, or a placeholder saying why not."""
    max_size = VARIANT_SIZES["full" if variant == REGIONS_VARIANT else variant]
    try:
        with storage.open_stored(dicom_file.storage_key) as handle:
            png = render_png(handle, max_size=max_size)
    except NoPixelDataError as error:
        return _placeholder(PreviewKind.NO_IMAGE, error.detail, variant)
    except RenderError as error:
        logger.info("preview of file %s cannot be rendered: %s", dicom_file.id, error.detail)
        return _placeholder(PreviewKind.ERROR, f"cannot display: {error.detail}", variant)
    except OSError as error:
        # The stored bytes are gone or unreadable: say so rather than fail the page.
        logger.warning(
            "stored file of %s cannot be read for a preview (%s)", dicom_file.id, type(error).__name__
        )
        return _placeholder(PreviewKind.ERROR, "cannot display: the stored file cannot be read", variant)
    return Preview(png=png, kind=PreviewKind.IMAGE)


def _placeholder(kind: PreviewKind, reason: str, variant: str) -> Preview:
    png = render_placeholder_png(reason, size=_PLACEHOLDER_SIZES[variant])
    return Preview(png=png, kind=kind, reason=reason)
