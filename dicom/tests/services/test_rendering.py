"""Tests of dicom.services.rendering on the files pydicom ships and on datasets built here."""

import io
import struct
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels import apply_color_lut, get_encoder, pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicom.services.rendering import NoPixelDataError, RenderError, render_placeholder_png, render_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEST_FILES_ROOT = Path(pydicom.data.__file__).parent / "test_files"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Bundled files that are expected to give a RenderError, with a piece of the reason. Any other file with
# pixel data must render; a file listed here that starts to render fails too, so the list stays honest.
EXPECTED_FAILURES = {
    # 12-bit lossy JPEG: libjpeg rejects its scan header and Pillow has no 12-bit JPEG (GDCM would do).
    "JPEG-lossy.dcm": "JPEG Extended (Process 2 and 4) pixel data cannot be decoded",
    # Crafted so that a sequence delimiter sits inside the J2K codestream: the codestream is corrupt.
    "JPEG2000-embedded-sequence-delimiter.dcm": "JPEG 2000 Image Compression pixel data cannot be decoded",
    "MR_truncated.dcm": "pixel data is truncated (8130 of 8192 bytes present)",
    # Number of Frames is "1A".
    "badVR.dcm": "Number of Frames is not a valid integer",
    # Pixel data without any Image Pixel module attributes.
    "meta_missing_tsyntax.dcm": "required image attributes are missing: Rows, Columns",
    "nested_priv_SQ.dcm": "required image attributes are missing: Rows, Columns",
}


def _bundled_files_with_pixel_data() -> list[str]:
    names = []
    for path in pydicom.data.get_testdata_files():
        path = Path(path)
        # Only the files in the wheel: anything else would be a download, which hangs offline.
        if not path.is_file() or TEST_FILES_ROOT not in path.parents:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(path, defer_size="1 KB")
        except Exception:  # noqa: S112 - not DICOM (README, JSON, dumps) or no file meta: outside the brief
            continue
        if any(keyword in ds for keyword in PIXEL_KEYWORDS):
            names.append(path.relative_to(TEST_FILES_ROOT).as_posix())
    return sorted(names)


BUNDLED_WITH_PIXELS = _bundled_files_with_pixel_data()


def _open_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(_open_png(data))


def _as_file(ds: Dataset) -> io.BytesIO:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def _secondary_capture(pixels: np.ndarray, **attributes: object) -> Dataset:
    """A minimal grayscale Secondary Capture holding ``pixels`` (uint8 or uint16, one frame)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_bundled_files_were_found() -> None:
    # Guards the parametrization below against silently collecting nothing.
    assert len(BUNDLED_WITH_PIXELS) > 80
    assert set(EXPECTED_FAILURES) <= set(BUNDLED_WITH_PIXELS)


@pytest.mark.parametrize("name", BUNDLED_WITH_PIXELS)
def test_every_bundled_file_with_pixel_data_renders_or_says_why(name: str) -> None:
    path = TEST_FILES_ROOT / name
    if name in EXPECTED_FAILURES:
        with pytest.raises(RenderError) as caught:
            render_png(path)
        assert caught.value.detail
        assert EXPECTED_FAILURES[name] in caught.value.detail
        assert not isinstance(caught.value, NoPixelDataError)
        return

    ds = dcmread(path, stop_before_pixels=True)
    image = _open_png(render_png(path))
    assert image.size == (ds.Columns, ds.Rows)
    assert image.mode == (
        "L" if ds.SamplesPerPixel == 1 and ds.PhotometricInterpretation != "PALETTE COLOR" else "RGB"
    )

    thumbnail = _open_png(render_png(path, max_size=32))
    assert max(thumbnail.size) <= 32
    assert thumbnail.mode == image.mode


def test_render_accepts_an_open_binary_file() -> None:
    path = get_testdata_file("CT_small.dcm")
    with open(path, "rb") as fp:
        from_file = render_png(fp)
    assert from_file == render_png(path)


def test_thumbnail_keeps_aspect_and_bounds_the_longer_side() -> None:
    # JPEG2000.dcm is 256 columns by 1024 rows.
    image = _open_png(render_png(get_testdata_file("JPEG2000.dcm"), max_size=128))
    assert image.size == (32, 128)
    # examples_jpeg2k.dcm is 640 by 480 and in colour.
    image = _open_png(render_png(get_testdata_file("examples_jpeg2k.dcm"), max_size=100))
    assert image.size == (100, 75)
    assert image.mode == "RGB"


def test_thumbnail_never_upscales() -> None:
    image = _open_png(render_png(get_testdata_file("CT_small.dcm"), max_size=1000))
    assert image.size == (128, 128)


@pytest.mark.parametrize("max_size", [0, -5])
def test_max_size_must_be_positive(max_size: int) -> None:
    with pytest.raises(RenderError, match="max_size"):
        render_png(get_testdata_file("CT_small.dcm"), max_size=max_size)


def test_monochrome1_is_inverted() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME2"
    as_monochrome2 = _pixels(render_png(_as_file(ds))).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME1"
    as_monochrome1 = _pixels(render_png(_as_file(ds))).astype(int)

    assert as_monochrome2.mean() < 128 < as_monochrome1.mean()  # a CT slice is mostly dark air
    np.testing.assert_array_equal(as_monochrome1, 255 - as_monochrome2)


def test_modality_lut_is_applied_before_the_window() -> None:
    # Stored 1000/1024/1100 are -24/0/76 HU after rescale; a window at 0 HU, 100 wide, maps them to
    # dark, mid grey and white. Without the rescale all three would lie above the window: white.
    pixels = np.array([[1000, 1024, 1100]], dtype=np.uint16)
    ds = _secondary_capture(
        pixels, RescaleSlope=1, RescaleIntercept=-1024, RescaleType="HU", WindowCenter=0, WindowWidth=100
    )
    rendered = _pixels(render_png(_as_file(ds)))
    low, mid, high = rendered[0].tolist()
    assert low < 90
    assert 110 < mid < 145
    assert high == 255


def test_first_window_is_used_when_several_are_given() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = [40, 300], [400, 1500]
    with_two = render_png(_as_file(ds))
    ds.WindowCenter, ds.WindowWidth = 40, 400
    with_first = render_png(_as_file(ds))
    ds.WindowCenter, ds.WindowWidth = 300, 1500
    with_second = render_png(_as_file(ds))

    assert with_two == with_first
    assert with_two != with_second


def test_voi_lut_sequence_is_applied() -> None:
    # A step LUT: stored values below 128 to 0, the rest to 255.
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add(DataElement(0x00283006, "US", [0] * 128 + [255] * 128))
    ds = _secondary_capture(pixels, VOILUTSequence=Sequence([item]))
    rendered = _pixels(render_png(_as_file(ds)))
    np.testing.assert_array_equal(rendered, np.where(pixels < 128, 0, 255))


def test_automatic_window_ignores_a_few_outliers() -> None:
    # No window in the file; one hot pixel must not squash the rest of the image into black.
    pixels = np.tile(np.arange(100, 1100, 10, dtype=np.uint16), (100, 1))
    pixels[0, 0] = 60000
    rendered = _pixels(render_png(_as_file(_secondary_capture(pixels))))
    body = rendered[1:]
    assert body.min() == 0
    assert body.max() == 255
    assert 100 < body.mean() < 155


def test_unusable_window_falls_back_to_the_automatic_window() -> None:
    pixels = np.tile(np.arange(0, 1000, 10, dtype=np.uint16), (10, 1))
    without_window = render_png(_as_file(_secondary_capture(pixels)))
    zero_width = render_png(_as_file(_secondary_capture(pixels, WindowCenter=500, WindowWidth=0)))
    assert zero_width == without_window


def test_palette_colour_renders_rgb_through_the_palette() -> None:
    path = get_testdata_file("examples_palette.dcm")
    ds = dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    rendered = _pixels(render_png(path)).astype(int)

    assert rendered.shape == (ds.Rows, ds.Columns, 3)
    # Its 16-bit palette, scaled to 8 bits, colour for colour.
    expected = apply_color_lut(ds.pixel_array, ds).astype(int) / 257
    assert np.abs(rendered - expected).max() <= 1
    assert (rendered[..., 0] != rendered[..., 2]).any()  # not grey: the blue banner survives


def test_sixteen_bit_colour_is_scaled_to_eight_bits() -> None:
    eight = _pixels(render_png(get_testdata_file("SC_rgb_rle.dcm")))
    sixteen = _pixels(render_png(get_testdata_file("SC_rgb_rle_16bit.dcm")))
    np.testing.assert_array_equal(eight, sixteen)


def test_ybr_colour_comes_out_as_rgb() -> None:
    # The same picture stored as RGB and as uncompressed YBR_FULL_422.
    rgb = _pixels(render_png(get_testdata_file("SC_rgb_rle.dcm")))
    ybr = _pixels(render_png(get_testdata_file("SC_ybr_full_422_uncompressed.dcm")))
    assert ybr.shape == rgb.shape
    assert np.abs(ybr.astype(int) - rgb.astype(int)).max() <= 8


def test_multi_frame_colour_renders_frame_zero() -> None:
    path = get_testdata_file("examples_ybr_color.dcm")  # 30 frames of JPEG baseline YBR_FULL_422
    frame0, frame1 = pixel_array(path, index=0), pixel_array(path, index=1)
    assert not np.array_equal(frame0, frame1)
    np.testing.assert_array_equal(_pixels(render_png(path)), frame0)


def test_multi_frame_grayscale_renders_like_its_first_frame_alone() -> None:
    path = get_testdata_file("rtdose.dcm")  # 15 frames
    ds = dcmread(path)
    frames = ds.pixel_array
    assert not np.array_equal(frames[0], frames[1])

    single = dcmread(path)
    single.NumberOfFrames = 1
    single.PixelData = frames[0].tobytes()
    del single.GridFrameOffsetVector
    expected = render_png(_as_file(single))
    assert render_png(path) == expected

    second = dcmread(path)
    second.NumberOfFrames = 1
    second.PixelData = frames[1].tobytes()
    del second.GridFrameOffsetVector
    assert render_png(_as_file(second)) != expected


# A large multi-frame file: 600 frames of 512x512 16-bit, 300 MB uncompressed. A thumbnail of it may
# allocate a few frames' worth (one frame is 0.5 MB; float64 working copies 2 MB each), not the file.
LARGE_SIDE, LARGE_FRAMES = 512, 600
PEAK_ALLOCATION_LIMIT = 30 * 2**20


def _large_frame(number: int) -> np.ndarray:
    # Frame 0 a diagonal ramp, the others a ramp the other way: rendering the wrong frame shows.
    ramp = np.add.outer(np.arange(LARGE_SIDE), np.arange(LARGE_SIDE)).astype(np.uint16) * 4
    return ramp if number == 0 else ramp[:, ::-1] + number


def _large_header(transfer_syntax: str, frames: int) -> Dataset:
    ds = _secondary_capture(np.zeros((LARGE_SIDE, LARGE_SIDE), dtype=np.uint16))
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = (
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    )
    ds.NumberOfFrames = frames
    return ds


def _write_large_file(path: Path, transfer_syntax: str, frames: list[bytes], *, frames_total: int) -> None:
    """Write a file of ``frames_total`` frames chunk by chunk; the last given frame fills the rest.

    Native frames go in as they are; encapsulated ones as one fragment each with an empty Basic Offset
    Table, which makes the reader walk the fragments to find a frame.
    """
    encapsulated = transfer_syntax != ExplicitVRLittleEndian
    with open(path, "wb") as fp:
        _large_header(transfer_syntax, frames_total).save_as(fp, enforce_file_format=True)
        if encapsulated:
            fp.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
            fp.write(struct.pack("<HHL", 0xFFFE, 0xE000, 0))
        else:
            fp.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, len(frames[0]) * frames_total))
        for number in range(frames_total):
            frame = frames[min(number, len(frames) - 1)]
            if encapsulated:
                frame += b"\x00" * (len(frame) % 2)
                fp.write(struct.pack("<HHL", 0xFFFE, 0xE000, len(frame)))
            fp.write(frame)
        if encapsulated:
            fp.write(struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))


def _render_with_peak_allocation(path: Path) -> tuple[bytes, int]:
    tracemalloc.start()
    try:
        rendered = render_png(path, max_size=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return rendered, peak


def test_large_native_multi_frame_thumbnail_reads_only_frame_zero(tmp_path: Path) -> None:
    large = tmp_path / "large.dcm"
    frames = [_large_frame(0).tobytes(), _large_frame(1).tobytes()]
    _write_large_file(large, ExplicitVRLittleEndian, frames, frames_total=LARGE_FRAMES)
    assert large.stat().st_size > 300 * 10**6

    rendered, peak = _render_with_peak_allocation(large)

    assert peak < PEAK_ALLOCATION_LIMIT
    first_alone = _large_header(ExplicitVRLittleEndian, 1)
    first_alone.PixelData = frames[0]
    assert rendered == render_png(_as_file(first_alone), max_size=128)
    first_alone.PixelData = frames[1]
    assert rendered != render_png(_as_file(first_alone), max_size=128)


def test_large_encapsulated_multi_frame_without_offset_table_reads_only_frame_zero(tmp_path: Path) -> None:
    # Noise compresses badly, so each JPEG 2000 frame stays near its 0.5 MB uncompressed size.
    noise = np.random.default_rng(7).integers(0, 4096, (LARGE_SIDE, LARGE_SIDE), dtype=np.uint16)
    options = {
        "rows": LARGE_SIDE,
        "columns": LARGE_SIDE,
        "samples_per_pixel": 1,
        "bits_allocated": 16,
        "bits_stored": 16,
        "pixel_representation": 0,
        "photometric_interpretation": "MONOCHROME2",
        "number_of_frames": 1,
    }
    encoder = get_encoder(JPEG2000Lossless)
    frames = [encoder.encode(noise, **options), encoder.encode(noise[::-1], **options)]
    large = tmp_path / "large-j2k.dcm"
    _write_large_file(large, JPEG2000Lossless, frames, frames_total=LARGE_FRAMES)
    assert large.stat().st_size > 200 * 10**6

    rendered, peak = _render_with_peak_allocation(large)

    assert peak < PEAK_ALLOCATION_LIMIT
    first_alone = _large_header(JPEG2000Lossless, 1)
    first_alone.PixelData = encapsulate(frames[:1])
    assert rendered == render_png(_as_file(first_alone), max_size=128)
    first_alone.PixelData = encapsulate(frames[1:])
    assert rendered != render_png(_as_file(first_alone), max_size=128)


def _reencapsulated(how: str) -> Dataset:
    """examples_ybr_color.dcm (30 JPEG frames, with a Basic Offset Table) encapsulated another way."""
    ds = dcmread(get_testdata_file("examples_ybr_color.dcm"))
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    if how == "extended offset table":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        ds.PixelData = encapsulate(frames, has_bot=how == "basic offset table")
    return ds


@pytest.mark.parametrize("how", ["basic offset table", "extended offset table", "no offset table"])
def test_encapsulated_multi_frame_renders_frame_zero_from_a_file(tmp_path: Path, how: str) -> None:
    path = tmp_path / "ybr.dcm"
    _reencapsulated(how).save_as(path, enforce_file_format=True)
    expected = pixel_array(get_testdata_file("examples_ybr_color.dcm"), index=0)
    np.testing.assert_array_equal(_pixels(render_png(path)), expected)
    with open(path, "rb") as fp:
        assert render_png(fp) == render_png(path)


def test_encapsulated_multi_frame_cut_after_frame_zero_is_still_truncated() -> None:
    # Frame 0 is intact and could be decoded, but a file that ends inside its pixel data is damaged:
    # the renderer says so rather than show a picture of a broken file.
    data = _as_file(_reencapsulated("no offset table")).getvalue()
    with pytest.raises(RenderError) as caught:
        render_png(io.BytesIO(data[: len(data) * 2 // 3]))
    assert caught.value.detail == "pixel data is truncated (the file ends inside its pixel data element)"


def test_native_multi_frame_cut_after_frame_zero_is_still_truncated() -> None:
    ds = dcmread(get_testdata_file("rtdose.dcm"))  # 15 frames of 10x10 32-bit
    data = _as_file(ds).getvalue()
    with pytest.raises(RenderError) as caught:
        render_png(io.BytesIO(data[:-1000]))
    assert caught.value.detail == "pixel data is truncated (5000 of 6000 bytes present)"


def test_enhanced_multi_frame_uses_the_functional_group_window() -> None:
    pixels = np.array([[1000, 1024, 1100]], dtype=np.uint16)
    transformation = Dataset()
    transformation.RescaleSlope, transformation.RescaleIntercept, transformation.RescaleType = 1, -1024, "HU"
    window = Dataset()
    window.WindowCenter, window.WindowWidth = 0, 100
    frame_group = Dataset()
    frame_group.PixelValueTransformationSequence = Sequence([transformation])
    frame_group.FrameVOILUTSequence = Sequence([window])
    ds = _secondary_capture(pixels, SharedFunctionalGroupsSequence=Sequence([frame_group]))

    low, mid, high = _pixels(render_png(_as_file(ds)))[0].tolist()
    assert low < 90
    assert 110 < mid < 145
    assert high == 255


def test_rt_plan_has_no_pixel_data() -> None:
    with pytest.raises(NoPixelDataError) as caught:
        render_png(get_testdata_file("rtplan.dcm"))
    assert caught.value.detail == "this file has no image (SOP class: RT Plan Storage)"


def test_structured_report_has_no_pixel_data() -> None:
    with pytest.raises(NoPixelDataError, match=r"\(SOP class: Comprehensive SR Storage\)"):
        render_png(get_testdata_file("test-SR.dcm"))


def test_truncated_native_pixel_data_is_a_render_error() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    with pytest.raises(RenderError) as caught:
        render_png(_as_file(ds))
    assert caught.value.detail == "pixel data is truncated (16384 of 32768 bytes present)"


@pytest.mark.parametrize(
    ("cut", "detail"),
    [
        (100, "pixel data is truncated (the file ends inside its pixel data element)"),
        (2000, "pixel data is missing: the dataset describes an image but the file ends before it"),
    ],
)
def test_cut_short_compressed_file_is_a_render_error_not_a_missing_image(cut: int, detail: str) -> None:
    # pydicom reads a file cut inside encapsulated pixel data with only a warning and drops the element;
    # neither case may pass for "this file has no image".
    data = Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).read_bytes()
    with pytest.raises(RenderError) as caught:
        render_png(io.BytesIO(data[: len(data) - cut]))
    assert not isinstance(caught.value, NoPixelDataError)
    assert caught.value.detail == detail


def test_missing_file_is_a_render_error_without_the_path(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as caught:
        render_png(tmp_path / "DOE^JANE.dcm")
    assert caught.value.detail == "the file does not exist"


def test_directory_is_a_render_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="directory"):
        render_png(tmp_path)


def test_not_dicom_is_a_render_error() -> None:
    with pytest.raises(RenderError) as caught:
        render_png(io.BytesIO(b"%PDF-1.7 definitely not DICOM" * 10))
    assert caught.value.detail == "not a DICOM file (no DICOM file meta information)"


def test_placeholder_is_a_grey_png_with_text() -> None:
    image = _open_png(render_placeholder_png("No image: RT Plan Storage"))
    assert image.size == (256, 256)
    assert image.mode == "L"
    pixels = np.asarray(image)
    assert (pixels == 128).mean() > 0.9  # grey background
    assert pixels.max() > 200  # and light text on it


def test_placeholder_size_and_wrapping() -> None:
    long_text = "this file has no image (SOP class: Comprehensive 3D SR Storage)"
    image = _open_png(render_placeholder_png(long_text, size=64))
    assert image.size == (64, 64)
    assert np.asarray(image).max() > 200
    with pytest.raises(ValueError, match="size"):
        render_placeholder_png("x", size=8)
