import os
import random
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataelem import RawDataElement

from dicom.services.errors import DeflateBombError, InvalidDicomError
from dicom.services.validation import ValidatedFile, validate_dicom_file
from dicom.tests.services.dicom_builders import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    ITEM_DELIMITER,
    JPEG_BASELINE,
    element,
    element_header,
    encapsulated_pixel_data,
    file_meta,
    identifying_elements,
    image_elements,
    item,
    truncate_copy,
    write_deeply_nested,
    write_deflate_bomb,
    write_deflated,
    write_native_image,
    write_part10,
)

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
MODALITY = 0x00080060
STUDY_INSTANCE_UID = 0x0020000D
ROWS = 0x00280010
COLUMNS = 0x00280011
WANTED = [PATIENT_ID, PATIENT_NAME, MODALITY, STUDY_INSTANCE_UID, ROWS, COLUMNS, 0x00080016, 0x00080018]
BOUND = 256 * 1024 * 1024
CHARSET_FILES = Path(pydicom.data.__file__).parent / "charset_files"

# Bundled files that dcmread reads without complaint but that are not complete, well-formed Part 10
# files. Each entry names the defect the validator reports.
KNOWN_DEFECTS = {
    # Cut short inside Pixel Data / Beam Sequence: the files pydicom ships to test truncation.
    "MR_truncated.dcm": "truncated: element (7FE0,0010) PixelData declares 8192 bytes",
    "rtplan_truncated.dcm": "truncated: element (300A,00B0) BeamSequence declares 976 bytes",
    # A directory record item declares 248 bytes but its Directory Record Sequence has 224 left:
    # the item overruns its sequence (pydicom's test of a DICOMDIR without offsets).
    "DICOMDIR-nooffset": "an item of sequence (0004,1220) DirectoryRecordSequence declares 248 bytes",
    # Charset fixtures whose Pixel Data was stripped but whose Image Pixel module (Rows, Columns,
    # Bits Allocated) was left: indistinguishable from an image cut before its pixel data.
    "chrJapMulti.dcm": "describes an image (Rows, Columns, Bits Allocated) but has no pixel data",
    "chrJapMultiExplicitIR6.dcm": "describes an image (Rows, Columns, Bits Allocated) but has no pixel data",
    "chrKoreanMulti.dcm": "describes an image (Rows, Columns, Bits Allocated) but has no pixel data",
    # File Meta without the mandatory Transfer Syntax UID (PS3.10 7.1): the encoding is a guess.
    "meta_missing_tsyntax.dcm": "no Transfer Syntax UID",
}


def validate(path, **kwargs) -> ValidatedFile:
    kwargs.setdefault("wanted_tags", WANTED)
    kwargs.setdefault("max_inflated_size", BOUND)
    return validate_dicom_file(path, **kwargs)


def bundled_part10_files() -> list[Path]:
    # get_testdata_files() without a pattern lists the bundled files only (a pattern may hit the network).
    paths = []
    for name in sorted(get_testdata_files()) + sorted(str(p) for p in CHARSET_FILES.glob("*.dcm")):
        path = Path(name)
        if path.is_file():
            with path.open("rb") as fh:
                if fh.read(132)[128:132] == b"DICM":
                    paths.append(path)
    return paths


def pydicom_reads_completely(path: Path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if "PixelData" in ds:
                _ = ds.PixelData
    except Exception:
        return False
    return True


def test_every_bundled_part10_file_agrees_with_dcmread_except_named_defects():
    paths = bundled_part10_files()
    assert len(paths) > 120
    disagreements = []
    defects_found = {}
    for path in paths:
        pydicom_ok = pydicom_reads_completely(path)
        try:
            validate(path)
            valid, detail = True, ""
        except InvalidDicomError as exc:
            valid, detail = False, exc.detail
        if not valid and path.name in KNOWN_DEFECTS:
            defects_found[path.name] = detail
        elif valid != pydicom_ok:
            disagreements.append(f"{path.name}: dcmread ok={pydicom_ok}, validator: {detail or 'ok'}")
    assert disagreements == []
    assert set(defects_found) == set(KNOWN_DEFECTS)
    for name, detail in defects_found.items():
        assert KNOWN_DEFECTS[name] in detail


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_pydicoms_truncated_files_fail(name):
    with pytest.raises(InvalidDicomError, match=r"^truncated: "):
        validate(get_testdata_file(name))


REAL_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "rtplan.dcm",
    "SC_rgb_rle_2frame.dcm",
]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_pass(name):
    path = get_testdata_file(name)
    result = validate(path)
    ds = pydicom.dcmread(path)
    assert result.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert result.has_pixel_data == ("PixelData" in ds)
    assert result.size == os.path.getsize(path)
    assert result.header.file_meta is result.file_meta


def _bytes_after_deflate_stream(path: str) -> int:
    data = Path(path).read_bytes()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflater.decompress(data[validate(path).dataset_offset :])
    assert inflater.eof
    return len(inflater.unused_data)


# (file, size) cuts of REAL_FILES below that land exactly on a top-level element boundary.
BOUNDARY_CUTS = {("rtplan.dcm", 2672 // 3), ("JPEG2000.dcm", 3308 // 2)}


def _pixel_data_span(path: str) -> tuple[int, int] | None:
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_deflated:
        return None
    elem = ds["PixelData"]
    return elem.file_tell, len(elem.value)


@pytest.mark.parametrize("name", REAL_FILES)
@pytest.mark.parametrize("cut", ["third", "half", "minus_one", "mid_pixel_data"])
def test_real_files_cut_short_fail(tmp_path, name, cut):
    src = get_testdata_file(name)
    size = os.path.getsize(src)
    if cut == "third":
        new_size = size // 3
    elif cut == "half":
        new_size = size // 2
    elif cut == "minus_one" and name != "image_dfl.dcm":
        new_size = size - 1
    elif cut == "mid_pixel_data":
        span = _pixel_data_span(src)
        if span is None:
            pytest.skip("no pixel data at a file offset (none, or deflated)")
        new_size = span[0] + span[1] // 2
    elif name == "image_dfl.dcm":
        # The file carries 8 bytes after its deflate stream, which dcmread ignores and so do we:
        # "minus one" means one byte off the deflate stream itself.
        new_size = size - _bytes_after_deflate_stream(src) - 1
    if (name, new_size) in BOUNDARY_CUTS:
        pytest.skip("lands on an element boundary: see test_cut_on_a_top_level_element_boundary_passes")
    dst = tmp_path / "cut.dcm"
    truncate_copy(src, dst, new_size)
    with pytest.raises(InvalidDicomError, match=r"^(truncated|not a valid deflate)"):
        validate(dst)


@pytest.mark.parametrize(("name", "size"), sorted(BOUNDARY_CUTS))
def test_cut_on_a_top_level_element_boundary_passes(tmp_path, name, size):
    # The known limit of a structural check: these cuts end exactly after a top-level element, which
    # is byte for byte a complete (shorter) dataset without image attributes. Only an IOD-level check of
    # required attributes could tell (and dozens of bundled test files lack their Type 1 attributes).
    # An image cut after its Rows/Columns still fails, as its pixel data is missing.
    src = get_testdata_file(name)
    ds = pydicom.dcmread(src)
    value_ends = set()
    for tag in list(ds.keys()):  # the raw elements, unconverted: their value offsets and lengths
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF:
            value_ends.add(raw.value_tell + raw.length)
    assert size in value_ends
    dst = tmp_path / "cut.dcm"
    truncate_copy(src, dst, size)
    result = validate(dst)
    assert result.header.PatientID == ds.PatientID
    assert result.has_pixel_data is False


def test_image_cut_before_its_pixel_data_fails(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    offset, _ = _pixel_data_span(src)
    dst = tmp_path / "cut.dcm"
    truncate_copy(src, dst, offset - 12)  # right before the Pixel Data element header
    with pytest.raises(InvalidDicomError, match=r"describes an image .* but has no pixel data"):
        validate(dst)


def test_truncation_detail_names_the_element_and_carries_no_patient_data(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(src)
    dst = tmp_path / "cut.dcm"
    offset, length = _pixel_data_span(src)
    truncate_copy(src, dst, offset + 1200)
    with pytest.raises(InvalidDicomError) as info:
        validate(dst)
    assert info.value.detail == (
        f"truncated: element (7FE0,0010) PixelData declares {length} bytes but only 1200 remain in the file"
    )
    for value in (str(ds.PatientName), ds.PatientID, ds.StudyInstanceUID):
        assert value not in info.value.detail


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "file is empty"),
        (b"\0" * 128, "not a DICOM file: shorter than the 128-byte preamble and 'DICM' prefix"),
        (b"\0" * 128 + b"DICM", "file meta information has no Transfer Syntax UID (0002,0010)"),
        (b"Hello,\nthis is a plain text file, not an image.\n" * 10, "not a DICOM file: no 'DICM' prefix"),
        (random.Random(7).randbytes(4096), "not a DICOM file: no 'DICM' prefix"),
    ],
    ids=["empty", "preamble-only", "preamble-and-dicm", "text", "random"],
)
def test_non_dicom_bytes_fail(tmp_path, content, detail):
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    with pytest.raises(InvalidDicomError) as info:
        validate(path)
    assert info.value.detail.startswith(detail)


def test_file_meta_without_dataset_fails(tmp_path):
    path = tmp_path / "meta-only.dcm"
    path.write_bytes(file_meta(EXPLICIT_VR_LITTLE_ENDIAN))
    with pytest.raises(InvalidDicomError, match="no dataset after the file meta information"):
        validate(path)


def test_unknown_transfer_syntax_fails(tmp_path):
    path = tmp_path / "unknown-ts.dcm"
    write_part10(path, identifying_elements(), transfer_syntax="1.2.3.4.5")
    with pytest.raises(InvalidDicomError, match="a transfer syntax the service does not know") as refused:
        validate(path)
    assert "1.2.3.4.5" not in refused.value.detail  # a value read from the file is never repeated


def test_dataset_ending_in_stray_bytes_fails(tmp_path):
    path = tmp_path / "stray.dcm"
    write_part10(path, identifying_elements() + b"\x10\x00\x20")
    with pytest.raises(InvalidDicomError, match="3 stray bytes where an element header"):
        validate(path)


@pytest.mark.parametrize("depth", [17, 10_000])
def test_deep_nesting_fails_without_recursion(tmp_path, depth):
    path = tmp_path / "nested.dcm"
    write_deeply_nested(path, depth)
    with pytest.raises(InvalidDicomError, match=r"^sequence nesting deeper than 16 levels$"):
        validate(path)


def test_nesting_up_to_max_depth_passes_and_10000_levels_walk_iteratively(tmp_path):
    path = tmp_path / "nested.dcm"
    write_deeply_nested(path, 16)
    assert validate(path).header.PatientID == "PAT-0001"
    write_deeply_nested(path, 10_000)
    # Far beyond Python's recursion limit: only an iterative walk gets to the end.
    assert validate(path, max_depth=10_000).header.PatientID == "PAT-0001"


def test_unclosed_nested_sequence_fails(tmp_path):
    path = tmp_path / "unclosed.dcm"
    dataset = identifying_elements() + element_header(0x0040A730, "SQ", 0xFFFFFFFF) + item(0xFFFFFFFF)
    write_part10(path, dataset + element(0x0040A040, "CS", "TEXT"))
    with pytest.raises(InvalidDicomError, match="has no item delimiter before the end of the file"):
        validate(path)


def test_delimited_item_must_close_inside_its_defined_length_sequence(tmp_path):
    path = tmp_path / "overrun.dcm"
    inner = element(0x0040A040, "CS", "TEXT")
    # The sequence declares room for the item header and its first element only; the delimiter and a
    # following top-level element lie outside it.
    sequence = element_header(0x0040A730, "SQ", 8 + len(inner)) + item(0xFFFFFFFF) + inner
    write_part10(path, identifying_elements() + sequence + ITEM_DELIMITER + element(0x00200011, "IS", "1"))
    with pytest.raises(InvalidDicomError, match="no item delimiter before the end of its enclosing"):
        validate(path)


def test_item_overrunning_its_defined_length_sequence_fails(tmp_path):
    path = tmp_path / "overrun.dcm"
    inner = element(0x0040A040, "CS", "TEXT")
    sequence = element_header(0x0040A730, "SQ", 8 + len(inner)) + item(len(inner) + 8) + inner + b"\0" * 8
    write_part10(path, identifying_elements() + sequence)
    with pytest.raises(InvalidDicomError, match="declares 20 bytes but only 12 remain in its sequence"):
        validate(path)


def test_deflate_bomb_is_rejected_fast(tmp_path):
    path = tmp_path / "bomb.dcm"
    size = write_deflate_bomb(path, 600 * 1024 * 1024)
    assert size < 1024 * 1024
    started = time.perf_counter()
    with pytest.raises(DeflateBombError) as info:
        validate(path, max_inflated_size=500 * 1024 * 1024)
    assert time.perf_counter() - started < 5
    assert info.value.detail == f"deflated dataset inflates beyond {500 * 1024 * 1024} bytes"
    assert info.value.status_code == 400


def test_deflated_dataset_under_the_bound_passes_and_spills_to_disk(tmp_path):
    path = tmp_path / "big-deflated.dcm"
    write_deflate_bomb(path, 20 * 1024 * 1024)  # above the in-memory spool threshold
    result = validate(path, max_inflated_size=64 * 1024 * 1024)
    assert result.header.PatientID == "PAT-0001"
    assert result.has_pixel_data is False


def test_corrupt_deflate_stream_fails(tmp_path):
    path = tmp_path / "corrupt.dcm"
    write_deflated(path, identifying_elements())
    data = bytearray(path.read_bytes())
    meta_end = len(file_meta("1.2.840.10008.1.2.1.99"))
    data[meta_end : meta_end + 4] = b"\xff\xff\xff\xff"  # an invalid block type
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidDicomError, match="not a valid deflate stream"):
        validate(path)


def test_deflated_dataset_truncated_inside_fails(tmp_path):
    path = tmp_path / "cut.dcm"
    # A complete deflate stream whose inflated dataset stops inside an element.
    write_deflated(path, identifying_elements()[:-5])
    with pytest.raises(InvalidDicomError, match="remain in the inflated dataset"):
        validate(path)


def test_short_native_pixel_data_fails(tmp_path):
    path = tmp_path / "short.dcm"
    write_native_image(path, rows=256, columns=256, pixel_bytes=1000)
    with pytest.raises(InvalidDicomError) as info:
        validate(path)
    assert info.value.detail == (
        "native pixel data is 1000 bytes, expected at least 131072 for 256x256x1 16-bit x1 frame"
    )


def test_native_pixel_data_accounts_for_frames_and_packed_bits(tmp_path):
    path = tmp_path / "frames.dcm"
    write_native_image(path, rows=64, columns=64, bits=8, frames=3, pixel_bytes=64 * 64 * 2)
    with pytest.raises(InvalidDicomError, match="expected at least 12288 for 64x64x1 8-bit x3 frames"):
        validate(path)
    bits = identifying_elements() + image_elements(rows=10, columns=10, bits=1)
    write_part10(path, bits + element(0x7FE00010, "OB", b"\0" * 14))  # ceil(100 / 8) = 13
    assert validate(path).has_pixel_data is True
    write_part10(path, bits + element(0x7FE00010, "OB", b"\0" * 12))
    with pytest.raises(InvalidDicomError, match="pixel data is 12 bytes, expected at least 13"):
        validate(path)


def _encapsulated_file(path, pixel_data: bytes) -> None:
    dataset = identifying_elements() + image_elements(rows=16, columns=16, bits=8)
    with open(path, "wb") as fh:
        fh.write(file_meta(JPEG_BASELINE) + dataset + pixel_data)


def test_encapsulated_pixel_data_structure(tmp_path):
    path = tmp_path / "jpeg.dcm"
    _encapsulated_file(path, encapsulated_pixel_data([b"\xff\xd8" + b"x" * 30 + b"\xff\xd9"]))
    assert validate(path).has_pixel_data is True

    _encapsulated_file(path, encapsulated_pixel_data([b"\xff\xd8" * 8], delimiter=False))
    with pytest.raises(
        InvalidDicomError, match=r"^truncated: encapsulated pixel data has no sequence delimiter"
    ):
        validate(path)

    _encapsulated_file(path, encapsulated_pixel_data([], offset_table=None))
    with pytest.raises(InvalidDicomError, match="encapsulated pixel data has no Basic Offset Table item"):
        validate(path)

    no_table = element_header(0x7FE00010, "OB", 0xFFFFFFFF) + element(0x00091010, "OB", b"ab")
    _encapsulated_file(path, no_table)
    with pytest.raises(InvalidDicomError, match="does not start with a Basic Offset Table item"):
        validate(path)

    overrun = element_header(0x7FE00010, "OB", 0xFFFFFFFF) + item(0) + item(5000) + b"\0" * 100
    _encapsulated_file(path, overrun)
    with pytest.raises(InvalidDicomError, match="fragment 1 declares 5000 bytes but only 100 remain"):
        validate(path)


def test_large_native_file_is_walked_without_reading_it(tmp_path):
    path = tmp_path / "large.dcm"
    size = write_native_image(path, rows=512, columns=512, frames=100)  # 50 MiB of pixel data
    assert size > 50 * 1024 * 1024
    tracemalloc.start()
    try:
        result = validate(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.has_pixel_data is True
    assert result.size == size
    assert peak < 5 * 1024 * 1024


HEADER_FILES = [
    "CT_small.dcm",  # explicit VR LE
    "MR_small_implicit.dcm",  # implicit VR LE
    "MR_small_bigendian.dcm",  # explicit VR BE (emri_small_big_endian.dcm is not bundled)
    "SC_rgb_small_odd_big_endian.dcm",  # explicit VR BE with ISO_IR 192
    "image_dfl.dcm",  # deflated
    "JPEG2000.dcm",  # encapsulated
    "chrH31.dcm",  # ISO 2022 Japanese
    "chrX2.dcm",  # GB18030
    "chrArab.dcm",  # ISO_IR 127
    "chrRuss.dcm",  # ISO_IR 144
]


@pytest.mark.parametrize("name", HEADER_FILES)
def test_header_values_equal_dcmread(name):
    path = (
        get_testdata_file(name)
        if name.startswith(("CT", "MR", "SC", "JPEG", "image"))
        else CHARSET_FILES / name
    )
    result = validate(path)
    ds = pydicom.dcmread(path)
    for tag in WANTED:
        if tag in ds:
            assert tag in result.header
            assert result.header[tag].value == ds[tag].value
            assert result.header[tag].VR == ds[tag].VR
        else:
            assert tag not in result.header
    assert result.header.get("SpecificCharacterSet") == ds.get("SpecificCharacterSet")
    assert result.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert result.file_meta.MediaStorageSOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID


def test_header_keeps_only_wanted_top_level_elements():
    path = get_testdata_file("rtplan.dcm")
    result = validate(path, wanted_tags=[PATIENT_ID, 0x300A00B0, 0x300A00C0])  # BeamSequence, BeamNumber
    ds = pydicom.dcmread(path)
    assert set(result.header.keys()) == {PATIENT_ID, 0x300A00B0} | ({0x00080005} & set(ds.keys()))
    # Beam Number lives only inside Beam Sequence items, so it is not a top-level value.
    assert [beam.BeamNumber for beam in result.header.BeamSequence] == [b.BeamNumber for b in ds.BeamSequence]


def test_result_offsets_and_flags():
    path = get_testdata_file("rtplan.dcm")
    result = validate(path)
    with open(path, "rb") as fh:
        fh.seek(result.dataset_offset)
        first_group = int.from_bytes(fh.read(2), "little")
    assert first_group == 0x0008
    assert result.has_pixel_data is False
    assert result.transfer_syntax_uid == "1.2.840.10008.1.2"
