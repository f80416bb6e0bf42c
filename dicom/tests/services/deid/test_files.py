"""deidentify_file on real files: every pydicom test file the service accepts comes out valid."""

import io
import shutil
import subprocess
import warnings
from functools import cache
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from dicom.services.deid import DeidOptions, deidentify_file
from dicom.services.errors import DeidentificationRefusedError, InvalidDicomError

from .datasets import KEY, make_dataset

DCMDUMP = shutil.which("dcmdump")
OPTIONS = DeidOptions(accept_burned_in_annotation=True)


def _has_transfer_syntax(name: str) -> bool:
    try:
        ds = pydicom.dcmread(name, stop_before_pixels=True)
    except Exception:  # whatever pydicom cannot read, the service does not accept either
        return False
    meta = getattr(ds, "file_meta", None)
    return meta is not None and "TransferSyntaxUID" in meta


@cache
def accepted_test_files() -> list[str]:
    """Bundled pydicom test files that pydicom reads (force=False) with file meta and a transfer syntax."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [name for name in sorted(get_testdata_files()) if _has_transfer_syntax(name)]


def pydicom_cannot_write(path: str) -> str | None:
    """Why pydicom cannot write this file back untouched, or None if it can."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(path).save_as(io.BytesIO(), enforce_file_format=True)
        except Exception as exc:
            return f"pydicom cannot write {Path(path).name} unchanged either ({type(exc).__name__})"
    return None


def test_the_corpus_is_the_bundled_files():
    assert len(accepted_test_files()) > 150


@pytest.mark.parametrize("path", accepted_test_files(), ids=lambda path: Path(path).name)
def test_pydicom_test_file_deidentifies_rereads_and_parses_with_dcmdump(path, tmp_path):
    reason = pydicom_cannot_write(path)
    if reason:
        pytest.skip(reason)
    destination = tmp_path / "out.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(path)
        ds, report = deidentify_file(path, destination, options=OPTIONS, key=KEY)
        reread = pydicom.dcmread(destination)
    assert destination.read_bytes()[:132] == b"\x00" * 128 + b"DICM"
    assert reread.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    # accept_burned_in_annotation leaves the pixels unchecked: identity is then not removed from them.
    has_pixels = any(
        keyword in original for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    )
    assert reread.PatientIdentityRemoved == ds.PatientIdentityRemoved == ("NO" if has_pixels else "YES")
    if "PixelData" in original:
        assert reread.PixelData == original.PixelData
    if original.get("SOPInstanceUID"):
        assert reread.SOPInstanceUID == report.new_sop_instance_uid != original.SOPInstanceUID
        assert reread.file_meta.MediaStorageSOPInstanceUID == reread.SOPInstanceUID
    assert not [elem.tag for elem in reread if elem.tag.is_private]
    if DCMDUMP is None:
        pytest.skip("dcmdump (DCMTK) is not installed")
    result = subprocess.run([DCMDUMP, "-q", str(destination)], capture_output=True, check=False)
    errors = [line for line in result.stderr.decode("latin-1").splitlines() if line.startswith("E:")]
    assert result.returncode == 0 and not errors, errors


@pytest.mark.parametrize(
    ("name", "syntax"),
    [("MR_small_bigendian.dcm", ExplicitVRBigEndian), ("image_dfl.dcm", DeflatedExplicitVRLittleEndian)],
)
def test_big_endian_and_deflated_keep_their_syntax_and_pixels(name, syntax, tmp_path):
    source = get_testdata_file(name)
    original = pydicom.dcmread(source)
    destination = tmp_path / name
    deidentify_file(source, destination, options=DeidOptions(), key=KEY)
    reread = pydicom.dcmread(destination)
    assert original.file_meta.TransferSyntaxUID == syntax
    assert reread.file_meta.TransferSyntaxUID == syntax
    assert reread.PixelData == original.PixelData
    assert reread.StudyInstanceUID != original.StudyInstanceUID
    assert reread.PatientIdentityRemoved == "YES"


def test_file_objects_in_and_out():
    source = io.BytesIO()
    make_dataset().save_as(source, enforce_file_format=True)
    source.seek(0)
    destination = io.BytesIO()
    ds, report = deidentify_file(source, destination, options=DeidOptions(), key=KEY)
    destination.seek(0)
    reread = pydicom.dcmread(destination)
    assert reread.SOPInstanceUID == ds.SOPInstanceUID == report.new_sop_instance_uid
    assert "InstitutionAddress" not in reread


def test_not_dicom_is_invalid(tmp_path):
    with pytest.raises(InvalidDicomError):
        deidentify_file(
            io.BytesIO(b"not a dicom file at all" * 10), tmp_path / "out.dcm", options=DeidOptions(), key=KEY
        )
    assert not (tmp_path / "out.dcm").exists()


def test_burned_in_file_is_refused_and_nothing_written(tmp_path):
    ds = make_dataset()
    ds.BurnedInAnnotation = "YES"
    source = tmp_path / "in.dcm"
    ds.save_as(source, enforce_file_format=True)
    with pytest.raises(DeidentificationRefusedError):
        deidentify_file(source, tmp_path / "out.dcm", options=DeidOptions(), key=KEY)
    assert not (tmp_path / "out.dcm").exists()
