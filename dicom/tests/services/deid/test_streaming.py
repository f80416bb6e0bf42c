"""deidentify_file streams pixel data: the same output as a whole-file read, in a few MB of memory."""

import hashlib
import io
import struct
import tracemalloc
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom.services.deid import DeidOptions, deidentify_dataset, deidentify_file
from dicom.services.errors import DicomServiceError, InvalidDicomError

from .datasets import KEY, make_dataset
from .test_files import accepted_test_files

OPTIONS = DeidOptions(accept_burned_in_annotation=True)
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
LONG_VRS = {b"OB", b"OW", b"SQ", b"UN", b"UT"}
MB = 1024 * 1024


def deidentify_in_memory(source, destination, *, options=OPTIONS):
    """What deidentify_file did before streaming: the whole file, pixel data included, in memory."""
    ds = pydicom.dcmread(source)
    report = deidentify_dataset(ds, options=options, key=KEY)
    ds.preamble = b"\x00" * 128
    ds.save_as(destination, enforce_file_format=True)
    return ds, report


def pixel_offset(data: bytes) -> int:
    """Where the first top-level pixel data element starts (or the dataset ends)."""
    fp = io.BytesIO(data)
    pydicom.dcmread(fp, stop_before_pixels=True)
    return fp.tell()


def assert_same_datasets(streamed: bytes, in_memory: bytes) -> None:
    """Parse both outputs and compare them element by element, file meta included."""
    ours = pydicom.dcmread(io.BytesIO(streamed))
    theirs = pydicom.dcmread(io.BytesIO(in_memory))
    assert ours.preamble == theirs.preamble
    assert list(ours.file_meta.keys()) == list(theirs.file_meta.keys())
    for tag in list(theirs.file_meta.keys()):
        assert ours.file_meta[tag] == theirs.file_meta[tag], f"file meta {tag} differs"
    assert list(ours.keys()) == list(theirs.keys())
    for tag in list(theirs.keys()):
        assert ours[tag] == theirs[tag], f"{tag} differs"


def explicit_le(tag: int, vr: bytes, value: bytes) -> bytes:
    """One element encoded in explicit VR little endian."""
    if vr in LONG_VRS:
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


@pytest.mark.parametrize("path", accepted_test_files(), ids=lambda path: Path(path).name)
def test_streamed_output_is_the_in_memory_output(path, tmp_path):
    streamed_path, memory_path = tmp_path / "streamed.dcm", tmp_path / "memory.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = pydicom.dcmread(path)
        try:
            deidentify_in_memory(path, memory_path)
        except Exception as exc:  # the whole-file path refuses it: so must the streaming one
            # deidentify_file turns a library's refusal of malformed values into InvalidDicomError.
            expected = type(exc) if isinstance(exc, DicomServiceError) else InvalidDicomError
            with pytest.raises(expected):
                deidentify_file(path, streamed_path, options=OPTIONS, key=KEY)
            return
        ds, report = deidentify_file(path, streamed_path, options=OPTIONS, key=KEY)
        streamed, in_memory = streamed_path.read_bytes(), memory_path.read_bytes()
        assert_same_datasets(streamed, in_memory)
    assert streamed == in_memory
    assert report.new_sop_instance_uid == ds.get("SOPInstanceUID")

    if not any(tag in source for tag in PIXEL_TAGS):
        return
    syntax = source.file_meta.TransferSyntaxUID
    if syntax == DeflatedExplicitVRLittleEndian or Path(path).name == "MR_truncated.dcm":
        # One zlib stream, or pixel data cut short: the whole-file read, pixel data in the dataset.
        assert any(tag in ds for tag in PIXEL_TAGS)
        return
    assert not any(tag in ds for tag in PIXEL_TAGS), "the pixel data was read, not streamed"
    # The pixel data element, header and value, is the source's byte for byte. What followed it in
    # these files (trailing padding) is removed by the profile, so the element ends the output.
    original = Path(path).read_bytes()
    out_start, source_start = pixel_offset(streamed), pixel_offset(original)
    element = streamed[out_start:]
    assert element and original[source_start : source_start + len(element)] == element
    rest = original[source_start + len(element) :]
    assert not rest or struct.unpack("<H", rest[:2])[0] > 0x7FE0


def write_file_with_tail(path: Path, *, private_blob: int = 16) -> bytes:
    """A CT file followed, after its pixel data, by private data, a PN, a signature and padding."""
    ds = make_dataset()
    ds.save_as(path, enforce_file_format=True)
    tail = b"".join(
        [
            explicit_le(0x7FE10010, b"LO", b"ACME TAIL "),
            explicit_le(0x7FE11001, b"LO", b"Doe^Jane notes"),
            explicit_le(0x7FE11002, b"OB", b"\x07" * private_blob),
            explicit_le(0x7FE20010, b"PN", b"Doe^Jane^Marie"),  # even group: public, not in the table
            explicit_le(0xFFFAFFFA, b"SQ", struct.pack("<HHL", 0xFFFE, 0xE000, 0)),
            explicit_le(0xFFFCFFFC, b"OB", b"\x00" * 16),
        ]
    )
    with open(path, "ab") as fh:
        fh.write(tail)
    return tail


def test_elements_after_pixel_data_are_deidentified_like_the_rest(tmp_path):
    source = tmp_path / "tail.dcm"
    tail = write_file_with_tail(source)
    original = source.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds, _ = deidentify_file(source, tmp_path / "streamed.dcm", options=OPTIONS, key=KEY)
        deidentify_in_memory(source, tmp_path / "memory.dcm")
    streamed = (tmp_path / "streamed.dcm").read_bytes()
    assert_same_datasets(streamed, (tmp_path / "memory.dcm").read_bytes())
    assert streamed == (tmp_path / "memory.dcm").read_bytes()

    reread = pydicom.dcmread(io.BytesIO(streamed))
    assert not [elem.tag for elem in reread if elem.tag.is_private]
    assert 0xFFFAFFFA not in reread and 0xFFFCFFFC not in reread
    # The public PN after the pixel data is kept, but the patient's name is cleaned out of it.
    assert 0x7FE20010 in reread
    assert "Doe" not in str(reread[0x7FE20010].value) and "Jane" not in str(reread[0x7FE20010].value)
    assert 0x7FE20010 in ds and 0x7FE11001 not in ds
    # The pixel data element is the source's, byte for byte, and sits where the whole-file path puts it.
    source_start = pixel_offset(original)
    element = original[source_start : len(original) - len(tail)]
    out_start = pixel_offset(streamed)
    assert streamed[out_start : out_start + len(element)] == element
    assert streamed[out_start + len(element) :][:4] == struct.pack("<HH", 0x7FE2, 0x0010)


def test_a_large_private_value_after_pixel_data_is_never_read(tmp_path):
    source = tmp_path / "tail.dcm"
    write_file_with_tail(source, private_blob=48 * MB)
    tracemalloc.start()
    try:
        deidentify_file(source, tmp_path / "out.dcm", options=OPTIONS, key=KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * MB, f"peak {peak / MB:.1f} MiB"
    assert 0x7FE11002 not in pydicom.dcmread(tmp_path / "out.dcm")


def test_pixel_data_only_inside_a_sequence_takes_the_whole_file_path(tmp_path):
    ds = make_dataset()
    del ds.PixelData
    item = Dataset()
    item.Rows, item.Columns, item.BitsAllocated, item.BitsStored, item.HighBit = 2, 2, 8, 8, 7
    item.SamplesPerPixel, item.PixelRepresentation, item.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    item.PixelData = b"\x01\x02\x03\x04"
    ds.SharedFunctionalGroupsSequence = Sequence([item])  # kept and walked by the profile
    source = tmp_path / "item.dcm"
    ds.save_as(source, enforce_file_format=True)
    deidentify_file(source, tmp_path / "streamed.dcm", options=OPTIONS, key=KEY)
    deidentify_in_memory(source, tmp_path / "memory.dcm")
    streamed = (tmp_path / "streamed.dcm").read_bytes()
    assert streamed == (tmp_path / "memory.dcm").read_bytes()
    assert (
        pydicom.dcmread(io.BytesIO(streamed)).SharedFunctionalGroupsSequence[0].PixelData
        == b"\x01\x02\x03\x04"
    )


def test_a_file_object_is_read_from_its_current_position(tmp_path):
    source = tmp_path / "tail.dcm"
    write_file_with_tail(source)
    buffer = io.BytesIO(b"SOMETHING BEFORE" + source.read_bytes())
    buffer.seek(len(b"SOMETHING BEFORE"))
    destination = io.BytesIO()
    ds, _ = deidentify_file(buffer, destination, options=OPTIONS, key=KEY)
    deidentify_file(source, tmp_path / "from_path.dcm", options=OPTIONS, key=KEY)
    assert destination.getvalue() == (tmp_path / "from_path.dcm").read_bytes()
    assert "PixelData" not in ds  # streamed, not read


def _hash_range(path: Path, start: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(start)
        while chunk := fh.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


BIG_FRAMES, BIG_ROWS, BIG_COLUMNS = 100, 1024, 1024
BIG_FRAME_BYTES = BIG_ROWS * BIG_COLUMNS * 2


def _write_big_native(path: Path, pattern) -> tuple[Dataset, int]:
    """A 200 MB native 16-bit file of 100 frames, frame ``i`` the 2 bytes ``pattern(i)`` repeated.

    Written in chunks. Returns the header dataset and where the pixel data element starts.
    """
    ds = make_dataset()
    del ds.PixelData
    ds.Rows, ds.Columns, ds.NumberOfFrames = BIG_ROWS, BIG_COLUMNS, BIG_FRAMES
    ds.save_as(path, enforce_file_format=True)
    header_end = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, BIG_FRAME_BYTES * BIG_FRAMES))
        for index in range(BIG_FRAMES):
            fh.write(pattern(index) * (BIG_FRAME_BYTES // 2))
    return ds, header_end


@pytest.mark.parametrize("options", [OPTIONS, DeidOptions()], ids=["pixels-accepted", "pixels-scanned"])
def test_a_200_mb_file_is_deidentified_in_a_few_mb_of_memory(tmp_path, options):
    # Scanned, only the first, middle and last frames are decoded, one at a time.
    source = tmp_path / "big.dcm"
    ds, header_end = _write_big_native(source, lambda index: bytes([index, 255 - index]))
    assert source.stat().st_size > 200 * 1000 * 1000
    destination = tmp_path / "out.dcm"

    tracemalloc.start()
    try:
        result, report = deidentify_file(source, destination, options=options, key=KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 20 * MB, f"peak {peak / MB:.1f} MiB"
    assert "PixelData" not in result and report.new_sop_instance_uid == result.SOPInstanceUID
    with open(destination, "rb") as fh:
        pydicom.dcmread(fh, stop_before_pixels=True)
        out_start = fh.tell()
    assert destination.stat().st_size - out_start == source.stat().st_size - header_end
    assert _hash_range(destination, out_start) == _hash_range(source, header_end)
    header = pydicom.dcmread(destination, stop_before_pixels=True)
    assert header.PatientName != ds.PatientName
    assert header.PatientIdentityRemoved == ("NO" if options.accept_burned_in_annotation else "YES")
    if not options.accept_burned_in_annotation:
        assert report.pixel_text["scanned_frames"] == [1, 51, 100]


def test_clean_pixel_data_on_a_200_mb_file_decodes_and_writes_one_frame_at_a_time(tmp_path, monkeypatch):
    from dicom.services import pixel_text

    frames, frame_bytes = BIG_FRAMES, BIG_FRAME_BYTES
    source = tmp_path / "big.dcm"
    _write_big_native(source, lambda index: bytes([index, 1]))
    # A device region forces cleaning: decode, blank and rewrite of every frame.
    region = pixel_text.TextRegion(0, 0, 0, 64, 16, origin="device")
    monkeypatch.setattr(pixel_text, "device_regions_for", lambda ds: (region,))
    destination = tmp_path / "out.dcm"

    tracemalloc.start()
    try:
        _, report = deidentify_file(source, destination, options=DeidOptions(clean_pixel_data=True), key=KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # One frame at a time, plus the OCR's working memory for the rescan of three 1024 x 1024 frames
    # (about 60 MiB, whatever the file's size); the whole file in memory would be 400 MiB and more.
    assert peak < 100 * MB, f"peak {peak / MB:.1f} MiB"
    assert report.pixel_text["cleaned"] and report.pixel_text["device_regions"] == [[0, 0, 64, 16]]
    with open(destination, "rb") as fh:
        header = pydicom.dcmread(fh, stop_before_pixels=True)
        start = fh.tell() + 12
        for index in (0, 57, 99):
            fh.seek(start + index * frame_bytes)
            frame = fh.read(frame_bytes)
            value = bytes([index, 1])
            # Rows 0-19 (16 and the margin of 4) from column 0 to 67 hold the frame's background,
            # which is the frame's one value: the file's bytes are unchanged everywhere.
            assert frame == value * (frame_bytes // 2)
    assert header.BurnedInAnnotation == "NO" and header.NumberOfFrames == frames


@pytest.mark.parametrize("path", accepted_test_files(), ids=lambda path: Path(path).name)
def test_a_small_file_read_whole_gives_what_streaming_it_from_disk_gives(path, tmp_path):
    # A path of at most 1 MiB is read in one call and de-identified from memory; an open file is
    # streamed from disk, pixel data copied in chunks. Same bytes out, or the same refusal.
    from_memory, from_disk = tmp_path / "memory.dcm", tmp_path / "disk.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            deidentify_file(path, from_memory, options=OPTIONS, key=KEY)
        except DicomServiceError as exc:
            with open(path, "rb") as fp, pytest.raises(type(exc)):
                deidentify_file(fp, from_disk, options=OPTIONS, key=KEY)
            return
        with open(path, "rb") as fp:
            deidentify_file(fp, from_disk, options=OPTIONS, key=KEY)
    assert from_memory.read_bytes() == from_disk.read_bytes()
