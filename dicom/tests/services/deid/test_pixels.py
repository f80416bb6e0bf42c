"""Burned-in text under the engine's policy: refused by default, cleaned with clean_pixel_data, verified.

The test set is the builders module's TEXT_CASES (text drawn into pydicom's own images, and controls
without text) plus deid-data's real-looking ultrasound exports.
"""

import io
import os
import re
import shutil
import subprocess
import warnings
import zipfile
from functools import cache
from pathlib import Path

import deid_data
import numpy as np
import pydicom
import pytest

from dicom.services import ocr, pixel_text
from dicom.services.deid import DeidOptions, deidentify_file
from dicom.services.deid.pixels import PixelTextRefusedError
from dicom.services.errors import (
    DeidentificationRefusedError,
    DeidentificationVerificationError,
    DicomServiceError,
    InvalidDicomError,
)
from dicom.services.rendering import pixel_element_in
from dicom.tests.services.deid.test_files import accepted_test_files
from dicom.tests.services.dicom_builders import TEXT_CASES, build_text_case

from .datasets import KEY

CLEAN = DeidOptions(clean_pixel_data=True)
DCMDUMP = shutil.which("dcmdump")
DEFAULT = DeidOptions()
ULTRASOUNDS = Path(deid_data.__file__).parent / "data" / "ultrasounds"
TEXT = [case for case in TEXT_CASES if case.has_text]
CONTROLS = [case for case in TEXT_CASES if not case.has_text]


def _pixels(ds):
    keyword = next(kw for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if kw in ds)
    return ds[keyword].value


def _tokens(text: str) -> set[str]:
    return {token for token in re.split(r"[^0-9A-Z]+", text.upper()) if len(token) >= 3}


def _read_tokens(ds, frames) -> set[str]:
    """Every token of three or more letters or digits the OCR reads on ``frames`` of ``ds``."""
    reader = pixel_text.PixelFrames(ds, pixel_element_in(ds), None)
    found = set()
    for index in frames:
        for line in ocr.read_lines(reader.display(index)):
            found |= _tokens(line.text)
    return found


def _all_frames(ds) -> range:
    return range(int(ds.get("NumberOfFrames") or 1))


@pytest.mark.parametrize("case", TEXT, ids=lambda case: case.name)
def test_a_file_with_burned_in_text_is_refused_by_default_with_where_and_how(case, tmp_path):
    source = build_text_case(case, tmp_path / "in.dcm")
    destination = tmp_path / "out.dcm"
    with pytest.raises(DeidentificationRefusedError) as refused:
        deidentify_file(source, destination, options=DEFAULT, key=KEY)
    detail = refused.value.detail
    assert not destination.exists()
    assert "clean_pixel_data" in detail and "accept_burned_in_annotation" in detail
    if case.burned_in_annotation == "YES":
        assert "BurnedInAnnotation is YES" in detail
    else:
        assert isinstance(refused.value, PixelTextRefusedError)
        assert re.search(r"frame \d+ at x=\d+, y=\d+, \d+x\d+", detail)
    # It says where, never what: no drawn word appears in the detail.
    assert not _tokens(detail.replace("clean_pixel_data", "")) & _tokens(" ".join(case.drawn))


@pytest.mark.parametrize("case", TEXT, ids=lambda case: case.name)
def test_clean_pixel_data_blanks_every_drawn_text_and_says_so(case, tmp_path):
    source = build_text_case(case, tmp_path / "in.dcm")
    destination = tmp_path / "out.dcm"
    original = pydicom.dcmread(source)
    _, report = deidentify_file(source, destination, options=CLEAN, key=KEY)
    output = pydicom.dcmread(destination)

    assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert output.BurnedInAnnotation == "NO" and output.PatientIdentityRemoved == "YES"
    assert "113101" in [item.CodeValue for item in output.DeidentificationMethodCodeSequence]
    assert "Clean Pixel Data Option" in output.DeidentificationMethod
    assert report.pixel_text["cleaned"] and report.pixel_text["text_regions"]
    assert output.Rows == original.Rows and output.Columns == original.Columns
    assert int(output.get("NumberOfFrames") or 1) == case.frames
    if original.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit:
        assert output.LossyImageCompression == "01"
    # No drawn word can be read anywhere in the image, on any frame.
    assert not _read_tokens(output, _all_frames(output)) & _tokens(" ".join(case.drawn))


@pytest.mark.parametrize("case", TEXT, ids=lambda case: case.name)
def test_cleaning_leaves_every_pixel_outside_the_blanked_boxes_as_it_was(case, tmp_path):
    source = build_text_case(case, tmp_path / "in.dcm")
    destination = tmp_path / "out.dcm"
    _, report = deidentify_file(source, destination, options=CLEAN, key=KEY)
    before = pydicom.dcmread(source).pixel_array
    after = pydicom.dcmread(destination).pixel_array
    if before.ndim == after.ndim - 1 or case.frames == 1:
        before, after = before[np.newaxis, ...], after[np.newaxis, ...]
    rows, columns = before.shape[1], before.shape[2]
    outside = np.ones((rows, columns), dtype=bool)
    regions = [pixel_text.TextRegion(frame - 1, *box) for frame, *box in report.pixel_text["text_regions"]]
    regions += [
        pixel_text.TextRegion(0, *box, origin="device") for box in report.pixel_text["device_regions"]
    ]
    for region in regions:
        box = region.expanded(rows=rows, columns=columns)
        outside[box.top : box.top + box.height, box.left : box.left + box.width] = False
        # What is blanked is blanked on every frame.
        assert (
            all(
                np.ptp(frame[box.top : box.top + box.height, box.left : box.left + box.width]) == 0
                for frame in after
            )
            or case.base == "palette"
        )
    assert outside.any() and not outside.all()
    assert np.array_equal(before[:, outside], after[:, outside])


@pytest.mark.parametrize("case", CONTROLS, ids=lambda case: case.name)
def test_a_control_without_text_goes_through_with_its_pixels_byte_for_byte(case, tmp_path):
    source = build_text_case(case, tmp_path / "in.dcm")
    destination = tmp_path / "out.dcm"
    _, report = deidentify_file(source, destination, options=DEFAULT, key=KEY)
    original, output = pydicom.dcmread(source), pydicom.dcmread(destination)
    assert _pixels(output) == _pixels(original)
    assert output.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert output.PatientIdentityRemoved == "YES"
    assert report.pixel_text["scanned"] and not report.pixel_text["text_regions"]
    expected_frames = pixel_text.frames_to_scan(case.frames)
    assert report.pixel_text["scanned_frames"] == [index + 1 for index in expected_frames]


@pytest.mark.parametrize("case", CONTROLS, ids=lambda case: case.name)
def test_a_control_under_clean_pixel_data_keeps_its_pixels_too(case, tmp_path):
    source = build_text_case(case, tmp_path / "in.dcm")
    destination = tmp_path / "out.dcm"
    deidentify_file(source, destination, options=CLEAN, key=KEY)
    original, output = pydicom.dcmread(source), pydicom.dcmread(destination)
    assert _pixels(output) == _pixels(original)
    assert output.BurnedInAnnotation == "NO"


def test_device_regions_are_blanked_under_clean_pixel_data_where_the_ocr_finds_nothing(tmp_path):
    case = next(case for case in TEXT_CASES if case.name == "control-us-speckle")
    source = Path(build_text_case(case, tmp_path / "in.dcm"))
    ds = pydicom.dcmread(source)
    ds.Manufacturer, ds.ManufacturerModelName = "G.E. Medical Systems", "LOGIQ 700"  # 480 x 640
    ds.save_as(source, enforce_file_format=True)
    destination = tmp_path / "out.dcm"
    _, report = deidentify_file(source, destination, options=CLEAN, key=KEY)
    assert report.pixel_text["text_regions"] == [] and report.pixel_text["device_regions"] == [
        [0, 0, 640, 60]
    ]
    before, after = ds.pixel_array, pydicom.dcmread(destination).pixel_array
    band = 60 + 15  # the region and its blanking margin (a quarter of its height)
    assert before[:band].any() and not after[:band].any()  # filled with the background, black
    assert np.array_equal(after[band:], before[band:])
    # Without the option the same file goes through untouched: a device entry alone refuses nothing.
    deidentify_file(source, tmp_path / "default.dcm", options=DEFAULT, key=KEY)
    assert pydicom.dcmread(tmp_path / "default.dcm").PixelData == pydicom.dcmread(source).PixelData


def test_text_on_the_middle_frame_only_is_found_and_blanked_on_every_frame(tmp_path):
    case = next(case for case in TEXT_CASES if case.name == "ct-multiframe-middle")
    source = build_text_case(case, tmp_path / "in.dcm")
    with pytest.raises(PixelTextRefusedError) as refused:
        deidentify_file(source, tmp_path / "refused.dcm", options=DEFAULT, key=KEY)
    assert "frame 3 at" in refused.value.detail
    _, report = deidentify_file(source, tmp_path / "out.dcm", options=CLEAN, key=KEY)
    assert report.pixel_text["scanned_frames"] == [1, 3, 5]
    assert {region[0] for region in report.pixel_text["text_regions"]} == {3}


def test_accept_burned_in_annotation_keeps_the_pixels_and_says_identity_is_not_removed(tmp_path):
    case = next(case for case in TEXT_CASES if case.name == "ct-white-top")
    source = build_text_case(case, tmp_path / "in.dcm")
    destination = tmp_path / "out.dcm"
    _, report = deidentify_file(
        source, destination, options=DeidOptions(accept_burned_in_annotation=True), key=KEY
    )
    output = pydicom.dcmread(destination)
    assert _pixels(output) == _pixels(pydicom.dcmread(source))
    assert output.PatientIdentityRemoved == "NO"
    assert "Burned-in annotation not removed" in output.DeidentificationMethod
    assert report.pixel_text["skipped"] == "accept_burned_in_annotation"


def test_clean_and_accept_are_alternatives():
    with pytest.raises(ValueError, match="alternatives"):
        DeidOptions(clean_pixel_data=True, accept_burned_in_annotation=True)


def test_text_left_after_cleaning_fails_verification_and_nothing_is_written(tmp_path, monkeypatch):
    # A blanking step that misses its boxes (a defect) must be caught by the rescan, not released.
    monkeypatch.setattr(pixel_text, "blank_regions", lambda frames, boxes: None)
    case = next(case for case in TEXT_CASES if case.name == "ct-white-top")
    source = build_text_case(case, tmp_path / "in.dcm")
    destination = tmp_path / "out.dcm"
    with pytest.raises(DeidentificationVerificationError, match="still found in the pixel data"):
        deidentify_file(source, destination, options=CLEAN, key=KEY)
    assert not destination.exists()


def _ultrasounds() -> list[tuple[str, bytes]]:
    files = [(path.name, path.read_bytes()) for path in sorted(ULTRASOUNDS.glob("*.dcm"))]
    for archive in sorted(ULTRASOUNDS.glob("*.zip")):
        with zipfile.ZipFile(archive) as zipped:
            files += [(name, zipped.read(name)) for name in zipped.namelist() if name.endswith(".dcm")]
    return files


@pytest.mark.parametrize(
    ("name", "data"), _ultrasounds(), ids=lambda value: value if isinstance(value, str) else ""
)
def test_real_ultrasound_exports_are_refused_then_cleaned_of_every_identifying_text(name, data, tmp_path):
    source = tmp_path / "in.dcm"
    source.write_bytes(data)
    original = pydicom.dcmread(source)
    if original.get("BurnedInAnnotation") == "YES":
        with pytest.raises(DeidentificationRefusedError, match="BurnedInAnnotation is YES"):
            deidentify_file(source, tmp_path / "refused.dcm", options=DEFAULT, key=KEY)
        del original.BurnedInAnnotation  # the scan alone must find the text too
        original.save_as(source, enforce_file_format=True)
    with pytest.raises(PixelTextRefusedError):
        deidentify_file(source, tmp_path / "refused.dcm", options=DEFAULT, key=KEY)

    destination = tmp_path / "out.dcm"
    deidentify_file(source, destination, options=CLEAN, key=KEY)
    output = pydicom.dcmread(destination)
    frames = int(output.get("NumberOfFrames") or 1)
    checked = sorted({0, frames // 4, frames // 2, frames - 1})
    read = _read_tokens(output, checked)
    # The identifying values burned into these exports: the header's own, as the device drew them.
    identifying = _tokens(str(original.PatientName)) | _tokens(str(original.PatientID))
    identifying |= {token for token in _tokens(str(original.get("InstitutionName", ""))) if len(token) > 3}
    assert identifying and not read & identifying
    assert not [line for index in checked for line in _lines(output, index)]


def _lines(ds, index):
    reader = pixel_text.PixelFrames(ds, pixel_element_in(ds), None)
    return [line for line in ocr.read_lines(reader.display(index)) if pixel_text.is_text(line)]


# Bundled pydicom files with pixel data that the default options refuse, and why. A change in this
# list (a file newly refused, or one no longer refused) fails the test below.
EXPECTED_REFUSALS = {
    "GDCMJ2K_TextGBR.dcm": "burned-in text was found",  # the words red, green and blue
    "examples_jpeg2k.dcm": "burned-in text was found",  # an ultrasound export with its header
    "examples_palette.dcm": "burned-in text was found",  # ditto, in a palette image
    "examples_rgb_color.dcm": "burned-in text was found",  # ditto, RGB
    "examples_ybr_color.dcm": "burned-in text was found",  # ditto, a 30-frame YBR cine loop
    "JPEG-lossy.dcm": "cannot be decoded to check it",  # 12-bit JPEG Extended: no decoder installed
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot be decoded to check it",
    "MR_truncated.dcm": "cannot be decoded to check it",  # pixel data cut short
    "badVR.dcm": "cannot be decoded to check it",  # Number of Frames is not an integer
    "nested_priv_SQ.dcm": "cannot be decoded to check it",  # pixel data without image attributes
    "SC_rgb_jpeg.dcm": "cannot be read or written",  # pydicom cannot write it back unchanged either
}


@cache
def _bundled_with_pixels() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            path
            for path in accepted_test_files()
            if any(
                keyword in pydicom.dcmread(path)
                for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
            )
        ]


def test_every_bundled_pydicom_image_is_tried_and_only_the_listed_ones_are_refused(tmp_path):
    refused = {}
    for path in _bundled_with_pixels():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                deidentify_file(path, io.BytesIO(), options=DEFAULT, key=KEY)
            except DicomServiceError as error:
                refused[os.path.basename(path)] = error
    assert len(_bundled_with_pixels()) > 60
    assert sorted(refused) == sorted(EXPECTED_REFUSALS)
    for name, error in refused.items():
        assert EXPECTED_REFUSALS[name] in error.detail, (name, error.detail)
        assert isinstance(error, InvalidDicomError) == (name == "SC_rgb_jpeg.dcm")


def _cleanable_bundled() -> list[str]:
    return [path for path in _bundled_with_pixels() if os.path.basename(path) not in EXPECTED_REFUSALS]


@pytest.mark.parametrize("path", _cleanable_bundled(), ids=os.path.basename)
def test_every_bundled_image_survives_the_pixel_rewrite_of_cleaning(path, tmp_path, monkeypatch):
    # A device region on every bundled image forces the decode, blank and rewrite of Clean Pixel Data
    # through each syntax, bit depth, photometric interpretation and frame count pydicom ships.
    region = pixel_text.TextRegion(0, 0, 0, 4, 4, origin="device")
    monkeypatch.setattr(pixel_text, "device_regions_for", lambda ds: (region,))
    destination = tmp_path / "out.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, report = deidentify_file(path, destination, options=CLEAN, key=KEY)
        original, output = pydicom.dcmread(path), pydicom.dcmread(destination)
        before, after = original.pixel_array, output.pixel_array
    assert report.pixel_text["cleaned"] is True
    big_endian = original.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    expected = pydicom.uid.ExplicitVRBigEndian if big_endian else pydicom.uid.ExplicitVRLittleEndian
    assert output.file_meta.TransferSyntaxUID == expected
    assert after.shape == before.shape and after.dtype == before.dtype
    frames = int(original.get("NumberOfFrames") or 1)
    if frames == 1:
        before, after = before[np.newaxis], after[np.newaxis]
    margin = 2  # the blanking margin of a 4-pixel-high region
    outside = np.ones(before.shape[1:3], dtype=bool)
    outside[: 4 + margin, : 4 + margin] = False
    assert np.array_equal(before[:, outside], after[:, outside])
    if DCMDUMP is not None:
        result = subprocess.run([DCMDUMP, "-q", str(destination)], capture_output=True, check=False)
        errors = [line for line in result.stderr.decode("latin-1").splitlines() if line.startswith("E:")]
        assert result.returncode == 0 and not errors, errors
