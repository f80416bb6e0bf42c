"""The pixel text primitives: frames chosen, the gate, blanking, and the device regions table."""

import json

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom.services import pixel_text
from dicom.services.pixel_text import TextRegion
from dicom.services.rendering import pixel_element_in
from dicom.tests.services.dicom_builders import TEXT_CASES, build_text_case


@pytest.mark.parametrize(
    ("frames", "expected"), [(1, (0,)), (2, (0, 1)), (3, (0, 1, 2)), (30, (0, 15, 29)), (0, (0,))]
)
def test_the_first_middle_and_last_frames_are_scanned(frames, expected):
    assert pixel_text.frames_to_scan(frames) == expected


def test_the_gate_lets_nothing_through_on_a_flat_or_noisy_image_and_text_through():
    assert pixel_text.stroke_lines(np.zeros((256, 256), dtype=np.uint8)) == []
    noise = np.random.default_rng(1).integers(0, 20, size=(256, 256), dtype=np.uint8)
    assert pixel_text.stroke_lines(noise) == []
    case = next(case for case in TEXT_CASES if case.name == "ct-white-top")
    assert case.has_text


def test_the_gate_finds_the_line_of_drawn_text(tmp_path):
    case = next(case for case in TEXT_CASES if case.name == "ct-white-top")
    ds = pydicom.dcmread(build_text_case(case, tmp_path / "in.dcm"))
    frames = pixel_text.PixelFrames(ds, pixel_element_in(ds), None)
    lines = pixel_text.stroke_lines(frames.display(0))
    assert any(top < 15 and width > 40 for _left, top, width, _height in lines)


def test_blanking_fills_the_boxes_with_the_background_on_every_frame_and_nothing_else():
    frames = np.full((3, 20, 30), 7, dtype=np.int16)
    frames[:, 2:5, 2:9] = 900
    before = frames.copy()
    pixel_text.blank_regions(frames, [TextRegion(1, 2, 2, 7, 3)])
    assert (frames[:, 2:5, 2:9] == 7).all()
    outside = np.ones((20, 30), dtype=bool)
    outside[2:5, 2:9] = False
    assert np.array_equal(frames[:, outside], before[:, outside])


def test_expanded_regions_stay_inside_the_frame():
    box = TextRegion(0, 0, 1, 10, 8).expanded(rows=12, columns=9)
    assert (box.left, box.top) == (0, 0) and box.left + box.width <= 9 and box.top + box.height <= 12


def test_the_device_table_is_well_formed_and_every_entry_names_its_source():
    data = json.loads(pixel_text.DEVICE_REGIONS_FILE.read_text())
    assert data["devices"]
    for entry in data["devices"]:
        assert entry["source"] and entry["manufacturer"] and entry["model"]
        for left, top, width, height in entry["regions"]:
            assert 0 <= left < entry["columns"] and 0 <= top < entry["rows"] and width > 0 and height > 0
            assert left + width <= entry["columns"] and top + height <= entry["rows"]


def test_device_regions_match_manufacturer_model_and_size():
    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"), stop_before_pixels=True)
    regions = pixel_text.device_regions_for(ds)
    assert [(r.left, r.top, r.width, r.height, r.origin) for r in regions] == [(0, 0, 800, 53, "device")]
    ds.Rows = 351
    assert pixel_text.device_regions_for(ds) == ()
    ds.Rows, ds.ManufacturerModelName = 350, "CX51"
    assert pixel_text.device_regions_for(ds) == ()
