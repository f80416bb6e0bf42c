"""dicom.services.previews: render once, cache in storage, placeholders that say why; regions outlined."""

import io
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from pydicom.data import get_testdata_file

from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.previews import (
    DEVICE_REGION_COLOUR,
    TEXT_REGION_COLOUR,
    VARIANT_SIZES,
    WITHHELD_TEXT,
    PreviewKind,
    get_preview,
    get_regions_preview,
)
from dicom.services.rendering import render_placeholder_png
from dicom.tests.factories import DicomFileFactory

pytestmark = pytest.mark.django_db


def stored_row(name: str, *, anonymized: bool = True) -> DicomFile:
    """A completed row whose stored bytes are one of pydicom's files, as they are (no validation)."""
    dicom_file = DicomFileFactory(anonymized=anonymized)
    key = storage.key_for(dicom_file.id)
    storage.store_bytes(data=Path(get_testdata_file(name)).read_bytes(), key=key)
    DicomFile.objects.filter(pk=dicom_file.pk).update(storage_key=key)
    dicom_file.refresh_from_db()
    return dicom_file


def size_of(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_first_call_renders_and_stores_then_reads_the_cache():
    dicom_file = stored_row("CT_small.dcm")
    first = get_preview(dicom_file=dicom_file, variant="thumb", show_original=False)
    assert first.kind == PreviewKind.IMAGE and not first.cached
    key = storage.preview_key_for(dicom_file.id, variant="thumb")
    assert storage.exists(key)
    assert DicomFile.objects.get(pk=dicom_file.pk).preview_key == key
    # Replace the cached PNG: a second call must answer what is stored, not render again.
    marker = render_placeholder_png("cached", size=32)
    storage.store_bytes(data=marker, key=key)
    second = get_preview(dicom_file=dicom_file, variant="thumb", show_original=False)
    assert second.cached and second.png == marker


def test_variants_have_their_own_sizes_and_keys():
    dicom_file = stored_row("693_J2KI.dcm")  # 512x512 JPEG 2000
    thumb = get_preview(dicom_file=dicom_file, variant="thumb", show_original=False)
    full = get_preview(dicom_file=dicom_file, variant="full", show_original=False)
    assert size_of(thumb.png) == (128, 128)
    assert size_of(full.png) == (512, 512)  # never scaled up to 1024
    assert storage.exists(storage.preview_key_for(dicom_file.id, variant="full"))


def test_original_is_withheld_without_permission_and_nothing_is_cached():
    dicom_file = stored_row("CT_small.dcm", anonymized=False)
    preview = get_preview(dicom_file=dicom_file, variant="full", show_original=False)
    assert preview.kind == PreviewKind.WITHHELD and preview.reason == WITHHELD_TEXT
    assert size_of(preview.png) == (512, 512)
    assert not storage.exists(storage.preview_key_for(dicom_file.id, variant="full"))
    shown = get_preview(dicom_file=dicom_file, variant="full", show_original=True)
    assert shown.kind == PreviewKind.IMAGE and size_of(shown.png) == (128, 128)


def test_file_without_pixel_data_gets_a_no_image_placeholder():
    dicom_file = stored_row("rtplan.dcm")
    preview = get_preview(dicom_file=dicom_file, variant="thumb", show_original=True)
    assert preview.kind == PreviewKind.NO_IMAGE
    assert "no image" in preview.reason and "RT Plan Storage" in preview.reason
    assert not storage.exists(storage.preview_key_for(dicom_file.id, variant="thumb"))


def test_undecodable_file_gets_an_error_placeholder_with_the_reason():
    dicom_file = stored_row("MR_truncated.dcm")
    preview = get_preview(dicom_file=dicom_file, variant="full", show_original=True)
    assert preview.kind == PreviewKind.ERROR
    assert preview.reason == "cannot display: pixel data is truncated (8130 of 8192 bytes present)"
    assert size_of(preview.png) == (512, 512)


def test_missing_stored_bytes_give_an_error_placeholder():
    dicom_file = stored_row("CT_small.dcm")
    storage.delete(dicom_file.storage_key)
    preview = get_preview(dicom_file=dicom_file, variant="thumb", show_original=True)
    assert preview.kind == PreviewKind.ERROR and "cannot be read" in preview.reason


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (DicomFile.Status.PROCESSING, "file is processing: no image yet"),
        (DicomFile.Status.FAILED, "file is failed"),
    ],
)
def test_file_not_ready_gets_a_placeholder(status, reason):
    dicom_file = DicomFileFactory(status=status, anonymized=True)
    preview = get_preview(dicom_file=dicom_file, variant="thumb", show_original=True)
    assert preview.kind == PreviewKind.NOT_READY and preview.reason.startswith(reason)


def test_unknown_variant_is_refused():
    dicom_file = stored_row("CT_small.dcm")
    with pytest.raises(ValueError, match="unknown preview variant"):
        get_preview(dicom_file=dicom_file, variant="poster", show_original=True)


# --- the regions variant ---

RED, CYAN = TEXT_REGION_COLOUR, DEVICE_REGION_COLOUR


def with_report(dicom_file: DicomFile, pixel_text: dict) -> DicomFile:
    """Give a stored row the image size a real ingest records and a burned-in text report."""
    dicom_file.metadata = {**dicom_file.metadata, "rows": 512, "columns": 512}
    dicom_file.deid_report = {"pixel_text": pixel_text}
    dicom_file.save(update_fields=["metadata", "deid_report"])
    return dicom_file


def rgb(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def test_regions_are_scaled_to_the_preview_and_all_drawn_when_cleaned(monkeypatch):
    # A 512x512 image shown at 256 pixels: every box is halved, whatever frame it was found on.
    monkeypatch.setitem(VARIANT_SIZES, "full", 256)
    report = {"text_regions": [[1, 100, 100, 50, 40], [2, 300, 200, 60, 20]], "cleaned": True}
    dicom_file = with_report(stored_row("693_J2KI.dcm"), {**report, "device_regions": [[400, 0, 100, 30]]})
    preview = get_regions_preview(dicom_file=dicom_file, show_original=False)
    plain = rgb(get_preview(dicom_file=dicom_file, variant="full", show_original=False).png)
    drawn = rgb(preview.png)
    assert preview.kind == PreviewKind.IMAGE and drawn.size == plain.size == (256, 256)
    # Outlines just outside the scaled boxes (50,50)-(75,70) and (150,100)-(180,110); inside stays as is.
    assert drawn.getpixel((49, 60)) == RED and drawn.getpixel((76, 60)) == RED
    assert drawn.getpixel((149, 105)) == RED
    assert drawn.getpixel((60, 60)) == plain.getpixel((60, 60))
    assert drawn.getpixel((199, 5)) == CYAN  # the device region (200,0)-(250,15)
    assert drawn.getpixel((120, 200)) == plain.getpixel((120, 200))
    assert not storage.exists(storage.preview_key_for(dicom_file.id, variant="regions"))


def test_a_refused_job_draws_frame_one_boxes_on_its_source_withheld_without_permission():
    source = with_report(stored_row("693_J2KI.dcm", anonymized=False), {})
    job = DicomFileFactory(source=source, status=DicomFile.Status.FAILED, anonymized=True)
    job.deid_report = {
        "pixel_text": {"text_regions": [[1, 100, 100, 50, 40], [2, 300, 300, 60, 20]], "cleaned": False}
    }
    withheld = get_regions_preview(dicom_file=job, show_original=False)
    assert withheld.kind == PreviewKind.WITHHELD and withheld.reason == WITHHELD_TEXT
    preview = get_regions_preview(dicom_file=job, show_original=True)
    plain = rgb(get_preview(dicom_file=source, variant="full", show_original=True).png)
    drawn = rgb(preview.png)
    assert preview.kind == PreviewKind.IMAGE and drawn.size == (512, 512)
    assert drawn.getpixel((99, 120)) == RED
    # The box found on frame 2 is listed on the page, not drawn over frame 1.
    assert ImageChops.difference(plain, drawn).getbbox()[2] <= 160


def test_regions_variant_placeholders_say_why():
    plain = with_report(stored_row("693_J2KI.dcm"), {"text_regions": [], "cleaned": False})
    assert get_regions_preview(dicom_file=plain, show_original=True).kind == PreviewKind.NO_REGIONS
    orphan = DicomFileFactory(
        status=DicomFile.Status.FAILED,
        anonymized=True,
        deid_report={"pixel_text": {"text_regions": [[1, 1, 1, 5, 5]], "cleaned": False}},
    )
    gone = get_regions_preview(dicom_file=orphan, show_original=True)
    assert gone.kind == PreviewKind.NOT_READY and gone.reason == "the source file is gone: no image"
    unsized = stored_row("693_J2KI.dcm")  # a row without the image size recorded
    unsized.deid_report = {"pixel_text": {"text_regions": [[1, 1, 1, 5, 5]], "cleaned": True}}
    error = get_regions_preview(dicom_file=unsized, show_original=True)
    assert error.kind == PreviewKind.ERROR and "image size is not recorded" in error.reason
    assert size_of(error.png) == (512, 512)
