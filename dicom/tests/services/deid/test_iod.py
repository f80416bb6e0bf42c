"""Combined actions resolved by the instance's IOD, and sequences kept in shapes the IOD accepts."""

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, generate_uid

from dicom.services.deid import DeidOptions, deidentify_dataset
from dicom.services.deid.iod import requirements_for
from dicom.services.deid.keyed import keyed_uid

from .datasets import KEY, code_item, make_dataset, with_unknown_iod

BASIC = DeidOptions()
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def test_type_3_attributes_with_combined_actions_are_removed():
    ds = make_dataset()
    ds.SeriesDate, ds.SeriesTime = "20200315", "101500"  # X/D, Type 3 in General Series
    ds.StationName = "CTSTATION7"  # X/Z/D, Type 3 in General Equipment
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = "1.2.3", generate_uid()
    ds.ReferencedStudySequence = Sequence([reference])  # X/Z, Type 3 in General Study
    deidentify_dataset(ds, options=BASIC, key=KEY)
    for keyword in ("SeriesDate", "SeriesTime", "StationName", "ReferencedStudySequence"):
        assert keyword not in ds, keyword


def test_type_2_takes_the_empty_branch_and_type_1_the_dummy():
    ds = make_dataset()
    ds.ContentDate, ds.ContentTime = "20200315", "101500"  # Z/D; Type 2 in a CT's General Image
    ds.PatientID = "PAT-1"  # Z/D, Type 2 in Patient: Z, which the engine fills with a pseudonym
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert ds.ContentDate == "" and ds.ContentTime == ""
    assert ds.PatientID and ds.PatientID != "PAT-1"

    sr = _sr_dataset()
    sr.ContentDate, sr.ContentTime = "20200315", "101500"  # Type 1 in SR Document General
    deidentify_dataset(sr, options=BASIC, key=KEY)
    assert sr.ContentDate == "19000101" and sr.ContentTime == "000000"


def test_an_unknown_sop_class_falls_back_to_the_standard_column():
    ds = with_unknown_iod(make_dataset())
    ds.SeriesDate = "20200315"
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert ds.SeriesDate == "19000101"


def test_modules_present_decide_conditional_requirements():
    ds = make_dataset()
    assert requirements_for(ds).known
    assert requirements_for(with_unknown_iod(make_dataset())).known is False
    ds.SOPClassUID = CTImageStorage
    # Type 3 of a mandatory module, whatever else the instance holds.
    assert requirements_for(ds).type_of((), 0x00080021) == "3"


def _sr_dataset() -> Dataset:
    ds = make_dataset()
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.Modality = "SR"
    for keyword in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelData",
    ):
        if keyword in ds:
            del ds[keyword]
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code_item("11528-7", "Radiology Report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    return ds


def test_a_kept_sequence_keeps_items_with_their_required_contents():
    sr = _sr_dataset()
    observer = Dataset()
    observer.VerifyingObserverName = "Doe^Jane"
    observer.VerifyingOrganization = "Saint Elsewhere Hospital"
    observer.VerificationDateTime = "20200315101500"
    observer.VerifyingObserverIdentificationCodeSequence = Sequence([code_item("123", "Dr Doe")])
    sr.VerifyingObserverSequence = Sequence([observer])  # D
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
    item.ConceptNameCodeSequence = Sequence([code_item("121071", "Finding")])
    item.TextValue = "Jane Doe has a nodule"
    sr.ContentSequence = Sequence([item])  # D
    deidentify_dataset(sr, options=BASIC, key=KEY)

    kept = sr.VerifyingObserverSequence[0]
    assert str(kept.VerifyingObserverName) != "Doe^Jane" and kept.VerifyingObserverName
    assert kept.VerifyingOrganization == "ANONYMOUS"
    assert kept.VerificationDateTime == "19000101000000"
    assert len(kept.VerifyingObserverIdentificationCodeSequence) == 0  # Type 2: emptied
    content = sr.ContentSequence[0]
    assert content.RelationshipType and content.ValueType
    assert "Jane" not in str(content.get("TextValue", ""))


def test_referenced_performed_procedure_step_keeps_its_uids_replaced_where_required():
    ds = make_dataset()
    original = generate_uid()
    reference = Dataset()
    reference.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    reference.ReferencedSOPInstanceUID = original
    ds.ReferencedPerformedProcedureStepSequence = Sequence([reference])  # X/Z/D, Type 3 in a CT
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert "ReferencedPerformedProcedureStepSequence" not in ds
    assert keyed_uid(KEY, original) != original


def test_output_of_a_ct_has_no_dates_that_the_profile_would_have_removed(tmp_path):
    ds = make_dataset()
    ds.SeriesDate = ds.AcquisitionDate = "20200315"
    deidentify_dataset(ds, options=BASIC, key=KEY)
    path = tmp_path / "out.dcm"
    ds.save_as(path, enforce_file_format=True)
    reread = pydicom.dcmread(path)
    assert "SeriesDate" not in reread
    assert "AcquisitionDate" not in reread  # X/Z, Type 3 in General Image
