"""Preview images of stored files for the admin, rendered once and cached in storage.

A preview is the first frame rendered by :func:`dicom.services.rendering.render_png`, in two variants:
``thumb`` (longer side at most 128 px, for the file list) and ``full`` (at most 1024 px, for one file's
page). The first request renders it and stores the PNG under ``storage.preview_key_for(...)``; later
requests read it back. Files never change once completed, so a cached preview never goes stale.

What cannot be rendered comes back as a placeholder PNG that says why (no image in the file, pixel data
that cannot be decoded, a file still processing, an original withheld from a user without the patient
data permission). Placeholders are not cached: they are cheap, and a reason that depends on the user or
on a file still processing must not outlive it.
"""

import enum
import logging
from dataclasses import dataclass

from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.rendering import NoPixelDataError, RenderError, render_placeholder_png, render_png

logger = logging.getLogger(__name__)

# Longest side in pixels of each variant; None would mean the image's own size.
VARIANT_SIZES: dict[str, int] = {"thumb": 128, "full": 1024}
# The side of a placeholder per variant: big enough for its text to be read.
_PLACEHOLDER_SIZES: dict[str, int] = {"thumb": 128, "full": 512}
WITHHELD_TEXT = "preview withheld: original with patient data"


class PreviewKind(enum.StrEnum):
    IMAGE = "image"  # the rendered pixel data
    NO_IMAGE = "no-image"  # the file holds no image (SR, RT plan...)
    ERROR = "error"  # the pixel data cannot be decoded; ``reason`` says why
    WITHHELD = "withheld"  # an original, and the user may not see patient data
    NOT_READY = "not-ready"  # processing or failed: nothing stored to render


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

    try:
        with storage.open_stored(dicom_file.storage_key) as handle:
            png = render_png(handle, max_size=VARIANT_SIZES[variant])
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

    storage.store_bytes(data=png, key=key)
    if variant == "thumb" and dicom_file.preview_key != key:
        # A plain UPDATE of one column: no save() of a row another process may be changing.
        DicomFile.objects.filter(pk=dicom_file.pk).update(preview_key=key)
        dicom_file.preview_key = key
    return Preview(png=png, kind=PreviewKind.IMAGE)


def _placeholder(kind: PreviewKind, reason: str, variant: str) -> Preview:
    png = render_placeholder_png(reason, size=_PLACEHOLDER_SIZES[variant])
    return Preview(png=png, kind=kind, reason=reason)
