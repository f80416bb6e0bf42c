"""The engine's Part 10 writer writes exactly what pydicom's ``save_as(enforce_file_format=True)`` writes.

``streaming.Part10Writer`` copies the elements the engine left raw as their bytes and encodes the
engine's own simple values itself; everything else goes through pydicom's writer. These tests hold it
to pydicom's bytes on every bundled file (and every character set file), as read and after
de-identification under several option sets, and on values built to hit each of its branches.
"""

import copy
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, generate_uid

from dicom.services.deid import DeidOptions, deidentify_dataset, streaming

from .datasets import KEY, make_dataset
from .test_files import _has_transfer_syntax, accepted_test_files

OPTION_SETS = (
    DeidOptions(accept_burned_in_annotation=True),
    DeidOptions(
        accept_burned_in_annotation=True,
        retain_modified_dates=True,
        retain_safe_private=True,
        clean_descriptors=True,
        clean_structured_content=True,
        clean_graphics=True,
        retain_device_identity=True,
    ),
    DeidOptions(accept_burned_in_annotation=True, retain_uids=True, retain_full_dates=True),
)


def charset_files() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [name for name in sorted(get_charset_files()) if _has_transfer_syntax(name)]


ALL_FILES = accepted_test_files() + charset_files()


def pydicom_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def writer_bytes(ds: Dataset) -> tuple[bytes, bool]:
    out = io.BytesIO()
    writer = streaming.Part10Writer(ds)
    writer.header(out)
    return out.getvalue(), writer.fast


def header(path: str) -> Dataset:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ds.preamble = b"\x00" * 128
    return ds


def outcome(function, *args):
    """The bytes ``function`` writes, or the type of exception it raises."""
    try:
        return function(*args)
    except Exception as exc:
        return type(exc)


def test_the_fast_path_is_taken_for_nearly_every_bundled_file():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = sum(streaming.Part10Writer(header(path)).fast for path in ALL_FILES)
    assert len(ALL_FILES) > 160
    assert fast >= len(ALL_FILES) - 10


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda path: Path(path).name)
def test_the_header_as_read_is_written_as_pydicom_writes_it(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ours_ds, theirs_ds = header(path), header(path)
        except Exception:
            pytest.skip("pydicom cannot read this header")
        meta_before = copy.deepcopy(ours_ds.file_meta)
        ours = outcome(lambda: writer_bytes(ours_ds)[0])
        theirs = outcome(pydicom_bytes, theirs_ds)
    assert ours == theirs
    # The file meta the caller holds is not changed by writing (pydicom writes a copy of it).
    assert list(ours_ds.file_meta.keys()) == list(meta_before.keys())
    for tag in list(meta_before.keys()):
        assert ours_ds.file_meta[tag].value == meta_before[tag].value


@pytest.mark.parametrize("options", OPTION_SETS, ids=("basic", "many-options", "retain-uids"))
@pytest.mark.parametrize("path", ALL_FILES, ids=lambda path: Path(path).name)
def test_the_deidentified_header_is_written_as_pydicom_writes_it(path, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ours_ds, theirs_ds = header(path), header(path)
            deidentify_dataset(ours_ds, options=options, key=KEY)
            deidentify_dataset(theirs_ds, options=options, key=KEY)
        except Exception:
            pytest.skip("the engine refuses this file (tested elsewhere)")
        ours = outcome(lambda: writer_bytes(ours_ds)[0])
        theirs = outcome(pydicom_bytes, theirs_ds)
    assert ours == theirs


def built_dataset(syntax, charset: str | None = "ISO_IR 100") -> Dataset:
    """A header with nested sequences, read back from bytes so that its elements are raw."""
    ds = make_dataset()
    del ds.PixelData
    if charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    ds.file_meta.TransferSyntaxUID = syntax
    ds.ReferencedImageSequence = Sequence([Dataset(), Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.ReferencedImageSequence[1].ReferencedFrameNumber = "1\\2"
    inner = Dataset()
    inner.CodeValue = "T-1"
    ds.ReferencedImageSequence[1].PurposeOfReferenceCodeSequence = Sequence([inner])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    read = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    read.preamble = b"\x00" * 128
    return read


def change_everything(ds: Dataset) -> None:
    ds.PatientName = "ANON^0123456789ABCDEF"
    ds.OtherPatientNames = ["Doe^Jane=", "Roe^Richard"]  # a trailing empty component group
    ds.PatientID = ""
    ds.PatientBirthDate = None
    ds.StudyDescription = "Études"  # not ASCII: pydicom encodes it in the dataset's character set
    ds.SeriesDescription = "plain text"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.OtherStudyNumbers = None
    ds.Rows = 512
    ds.NumberOfFrames = "3"
    ds.RescaleSlope = "1.5"
    ds.add_new(0x00091010, "LO", "PRIVATE CREATOR")
    ds.add_new(0x00280106, "US", 7)  # Smallest Image Pixel Value: an ambiguous VR, fixed here
    ds.add_new(0x00181310, "US", [0, 256, 256, 0])  # Acquisition Matrix, multi-valued
    ds.SOPInstanceUID = generate_uid()
    new_item = Dataset()
    new_item.CodeValue = "113100"
    new_item.CodingSchemeDesignator = "DCM"
    new_item.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([new_item])
    ds.OtherPatientIDsSequence = Sequence()
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = generate_uid()
    undefined = Dataset()
    undefined.is_undefined_length_sequence_item = True
    undefined.TextValue = "item with undefined length"
    ds.ContentSequence = Sequence([undefined])
    ds["ContentSequence"].is_undefined_length = True
    ds.ReferencedPatientSequence = Sequence([Dataset()])


@pytest.mark.parametrize(
    "syntax", (ImplicitVRLittleEndian, ExplicitVRBigEndian, "1.2.840.10008.1.2.1"), ids=str
)  # fmt: skip
@pytest.mark.parametrize("charset", ("ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", None))
def test_every_kind_of_changed_value_is_written_as_pydicom_writes_it(syntax, charset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_ds, theirs_ds = built_dataset(syntax, charset), built_dataset(syntax, charset)
        change_everything(ours_ds)
        for tag in list(ours_ds.keys()):  # the same values in both (UIDs are new each time)
            theirs_ds[tag] = copy.deepcopy(ours_ds.get_item(tag))
        ours, fast = outcome(writer_bytes, ours_ds), None
        if isinstance(ours, tuple):
            ours, fast = ours
        theirs = outcome(pydicom_bytes, theirs_ds)
    assert ours == theirs
    assert fast


def test_a_changed_character_set_is_written_by_pydicom_itself():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_ds = built_dataset("1.2.840.10008.1.2.1", "ISO_IR 100")
        ours_ds.SpecificCharacterSet = "ISO_IR 192"
        ours_ds.StudyDescription = "Études"
        theirs_ds = copy.deepcopy(ours_ds)
        ours, fast = writer_bytes(ours_ds)
        assert ours == pydicom_bytes(theirs_ds)
    assert not fast


def test_a_value_pydicom_cannot_write_raises_as_pydicom_raises():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_ds, theirs_ds = built_dataset("1.2.840.10008.1.2.1"), built_dataset("1.2.840.10008.1.2.1")
        for ds in (ours_ds, theirs_ds):
            ds.add_new(0x00280010, "US", 70000)  # Rows out of range for US
        assert outcome(lambda: writer_bytes(ours_ds)[0]) is outcome(pydicom_bytes, theirs_ds) is OSError


def test_a_dataset_read_in_another_encoding_is_written_by_pydicom_itself():
    ds = built_dataset(ImplicitVRLittleEndian)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"  # now says explicit, was read implicit
    theirs = copy.deepcopy(ds)
    ours, fast = writer_bytes(ds)
    assert not fast
    assert ours == pydicom_bytes(theirs)
