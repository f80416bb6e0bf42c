"""De-identified objects stay valid DICOM: DICOM's own validator finds no error the original did not have.

``dciodvfy`` (Debian dicom3tools) checks each output against its IOD. Its error lines are compared with
the original's, UIDs masked (they are replaced by design); any error only the output has fails.
"""

import io
import re
import shutil
import subprocess
import warnings
import zipfile
from functools import cache
from pathlib import Path

import deid_data
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom.services.deid import DeidOptions, deidentify_dataset, deidentify_file
from dicom.services.deid.options import OPTION_NAMES
from dicom.services.errors import DicomServiceError, InvalidDicomError
from dicom.services.validation import validate_dicom_file

from .datasets import KEY, code_item, make_dataset
from .test_files import accepted_test_files

DCIODVFY = shutil.which("dciodvfy")
DEID_DATA = Path(deid_data.__file__).parent / "data"
# The Basic Profile on the attributes (the pixels are the scan's business, tested on their own), and
# every option on: Modified Dates (the alternative to Full Dates) and Clean Pixel Data (to accepting).
MODES = {
    "basic": DeidOptions(accept_burned_in_annotation=True),
    "every-option": DeidOptions.from_names(
        [name for name in OPTION_NAMES if name not in ("retain_full_dates", "accept_burned_in_annotation")]
    ),
}
UID = re.compile(r"[0-9]+(\.[0-9]+){2,}")
# What is not compared, and why. A change in this list fails test_the_skipped_files_are_the_listed_ones.
SKIPPED = {
    "MR_truncated.dcm": "the validator refuses it (pixel data cut short), on every path",
    "rtplan_truncated.dcm": "the validator refuses it (cut short), on every path",
    "DICOMDIR-nooffset": "the validator refuses it, on every path",
    "SC_rgb_jpeg.dcm": "refused: pydicom cannot write it back unchanged either",
    "empty_charset_LEI.dcm": "refused: no SOP Class or Instance UID, so it cannot be written as DICOM",
    "nested_priv_SQ.dcm": "refused: no SOP Class or Instance UID, so it cannot be written as DICOM",
}


@cache
def corpus() -> tuple[tuple[str, bytes], ...]:
    """Every bundled pydicom file the service can read, and every deid-data file (cines unzipped)."""
    files = [(Path(path).name, Path(path).read_bytes()) for path in accepted_test_files()]
    for path in sorted(DEID_DATA.rglob("*")):
        if path.suffix == ".dcm":
            files.append((f"deid-data/{path.relative_to(DEID_DATA)}", path.read_bytes()))
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as zipped:
                files += [
                    (f"deid-data/{path.name}/{name}", zipped.read(name))
                    for name in zipped.namelist()
                    if name.endswith(".dcm")
                ]
    return tuple(files)


def _errors(path: Path) -> set[str]:
    result = subprocess.run(
        [DCIODVFY, str(path)], capture_output=True, text=True, errors="replace", check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    return {UID.sub("<uid>", line.strip()) for line in lines if line.startswith("Error")}


def _deidentified(name: str, data: bytes, options: DeidOptions, tmp_path: Path) -> tuple[Path, Path] | str:
    """Original and output paths, or why the file is not compared (a refusal, as the service says)."""
    source = tmp_path / "in.dcm"
    source.write_bytes(data)
    try:
        validate_dicom_file(source, wanted_tags=(), max_inflated_size=1 << 30)
    except DicomServiceError:
        return "validator"
    destination = tmp_path / "out.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            deidentify_file(source, destination, options=options, key=KEY)
        except DicomServiceError as error:
            return f"refused: {type(error).__name__}"
    return source, destination


@pytest.mark.slow
@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", [name for name, _ in corpus()])
def test_deidentification_introduces_no_validator_error(name, mode, tmp_path):
    data = dict(corpus())[name]
    outcome = _deidentified(name, data, MODES[mode], tmp_path)
    if isinstance(outcome, str):
        if Path(name).name in SKIPPED or "PixelText" in outcome or "Refused" in outcome:
            pytest.skip(f"{name}: {outcome}")
        pytest.fail(f"{name} is not compared ({outcome}) and is not listed in SKIPPED")
    source, destination = outcome
    introduced = _errors(destination) - _errors(source)
    assert not introduced, sorted(introduced)


def test_the_skipped_files_are_the_listed_ones(tmp_path):
    skipped = {}
    for name, data in corpus():
        outcome = _deidentified(name, data, MODES["basic"], tmp_path)
        if isinstance(outcome, str):
            skipped[Path(name).name] = outcome
    assert sorted(skipped) == sorted(SKIPPED), skipped
    assert len(corpus()) > 160


def test_a_file_meta_without_its_sop_class_is_completed_from_the_dataset(tmp_path):
    ds = make_dataset()
    del ds.file_meta.MediaStorageSOPClassUID
    source = tmp_path / "in.dcm"
    ds.preamble = b"\x00" * 128
    ds.save_as(source, enforce_file_format=False)
    assert "MediaStorageSOPClassUID" not in pydicom.dcmread(source).file_meta
    out = io.BytesIO()
    deidentify_file(source, out, options=MODES["basic"], key=KEY)
    out.seek(0)
    assert pydicom.dcmread(out).file_meta.MediaStorageSOPClassUID == ds.SOPClassUID


def test_a_dataset_without_sop_uids_is_refused_with_its_reason(tmp_path):
    ds = make_dataset()
    del ds.SOPClassUID, ds.file_meta.MediaStorageSOPClassUID
    with pytest.raises(InvalidDicomError, match=r"no SOP Class UID \(0008,0016\)"):
        deidentify_dataset(ds, options=MODES["basic"], key=KEY)


def test_coded_values_are_never_cleaned():
    ds = make_dataset()
    ds.PatientName = "Test^Patient"
    ds.AnatomicRegionSequence = Sequence([code_item("T-D3000", "Chest")])
    ds.AnatomicRegionSequence[0].CodingSchemeDesignator = "TEST"
    deidentify_dataset(ds, options=DeidOptions(), key=KEY)
    assert ds.AnatomicRegionSequence[0].CodingSchemeDesignator == "TEST"


def test_an_overlay_without_its_data_goes_as_a_whole_group():
    ds = make_dataset()
    ds.add_new(0x60000010, "US", 2)  # Overlay Rows
    ds.add_new(0x60000011, "US", 2)  # Overlay Columns
    ds.add_new(0x60000040, "CS", "G")  # Overlay Type
    ds.add_new(0x60003000, "OW", b"\xff\x00")  # Overlay Data
    deidentify_dataset(ds, options=DeidOptions(), key=KEY)
    assert not [tag for tag in list(ds.keys()) if tag >> 16 == 0x6000]


def test_directory_records_keep_their_required_keys():
    ds = Dataset()
    record = Dataset()
    record.DirectoryRecordType = "STUDY"
    record.StudyDate, record.StudyTime, record.StudyID = "20200315", "101500", "S-77"
    record.StudyDescription, record.AccessionNumber = "CT chest for Jane Doe", "ACC1"
    record.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.DirectoryRecordSequence = Sequence([record])
    deidentify_dataset(ds, options=DeidOptions(), key=KEY)
    kept = ds.DirectoryRecordSequence[0]
    assert kept.StudyDate == "19000101" and kept.StudyTime == "000000" and kept.StudyID == "ANONYMOUS"
    assert kept.StudyDescription == "" and kept.AccessionNumber == ""


def test_spellings_of_one_patient_share_one_pseudonym():
    from dicom.services.deid.keyed import pseudonym_id, pseudonym_name

    names = ["DOE^JANE", "DOE^JANE^", "Doe^Jane", " doe ^ jane ^^", "DOE^JANE^^^="]
    assert len({pseudonym_name(KEY, name) for name in names}) == 1
    assert pseudonym_name(KEY, "DOE^JANE") != pseudonym_name(KEY, "DOE^JOHN")
    assert len({pseudonym_id(KEY, value) for value in ("PAT-0001", " pat-0001 ", "PAT-0001  ")}) == 1
    outputs = []
    for name in ("DOE^JANE", "DOE^JANE^"):
        ds = make_dataset()
        ds.PatientName = name
        deidentify_dataset(ds, options=DeidOptions(), key=KEY)
        outputs.append(str(ds.PatientName))
    assert outputs[0] == outputs[1]


def test_an_earlier_deidentification_is_kept_in_the_record():
    ds = make_dataset()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "OTHERTOOL 1.0"
    ds.DeidentificationMethodCodeSequence = Sequence(
        [code_item("113100", "Basic Application Confidentiality Profile")]
    )
    ds.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator = "DCM"
    deidentify_dataset(ds, options=DeidOptions(clean_descriptors=True), key=KEY)
    assert ds.DeidentificationMethod[0] == "OTHERTOOL 1.0"
    assert ds.DeidentificationMethod[1].startswith("DICOMSVC PS3.15-2024b")
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113100", "113105"]


def test_every_shifted_date_differs_from_its_original_whatever_its_precision():
    from dicom.services.deid.engine import shift_date_value

    for days in (1, 10, 100, 200, 400, 3650):
        assert shift_date_value("1947", "DT", days) != "1947"
        assert shift_date_value("194703", "DT", days) != "194703"
        assert shift_date_value("19470315", "DA", days) != "19470315"
    assert shift_date_value("1947", "DT", 100) == "1946"  # at least one year
    assert shift_date_value("1947", "DT", 800) == "1945"  # about two years
    assert shift_date_value("194703", "DT", 100) == "194612"  # about three months
    assert shift_date_value("194701", "DT", 10) == "194612"  # at least one month
    assert shift_date_value("19470315", "DA", 14) == "19470301"


def test_retired_identifying_attributes_are_treated_like_their_counterparts():
    ds = make_dataset()
    ds.add_new(0x00402006, "SH", "ORD-778899")  # Placer Order Number / Imaging Service Request (Retired)
    ds.add_new(0x00402007, "SH", "FIL-445566")  # Filler Order Number / Imaging Service Request (Retired)
    ds.add_new(0x00401006, "SH", "PROC-1")  # Placer Order Number / Procedure (retired)
    ds.add_new(0x00401007, "SH", "PROC-2")  # Filler Order Number / Procedure (retired)
    deidentify_dataset(ds, options=DeidOptions(), key=KEY)
    for tag in (0x00402006, 0x00402007, 0x00401006, 0x00401007):
        assert tag in ds and ds[tag].value in ("", None)


def test_a_name_in_an_unlisted_binary_value_is_removed_and_verified():
    ds = make_dataset()
    ds.add_new(0x00686300, "OB", ("PLOT " + str(ds.PatientName)).encode("utf-16-le"))  # HPGL Document
    ds.add_new(0x00686310, "OB", b"\x00\x01no identifying text here")  # unrelated bytes stay
    deidentify_dataset(ds, options=DeidOptions(), key=KEY)
    assert 0x00686300 not in ds


def test_an_original_uid_quoted_in_text_is_replaced_by_its_keyed_uid():
    from dicom.services.deid.keyed import keyed_uid

    ds = make_dataset()
    original = str(ds.StudyInstanceUID)
    ds.ImageComments = f"prior study {original} compared"
    deidentify_dataset(ds, options=DeidOptions(clean_descriptors=True), key=KEY)
    assert ds.ImageComments == f"prior study {keyed_uid(KEY, original)} compared"
