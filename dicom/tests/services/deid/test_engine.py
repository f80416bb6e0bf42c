"""The engine applies every kind of rule of PS3.15 Table E.1-1, at any depth, and reports it."""

import json

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicom.services.deid import DeidOptions, deidentify_dataset
from dicom.services.deid.engine import DUMMY_VALUES
from dicom.services.deid.keyed import keyed_uid, pseudonym_id, pseudonym_name
from dicom.services.errors import DeidentificationRefusedError

from .datasets import KEY, OTHER_KEY, code_item, make_dataset, with_unknown_iod

BASIC = DeidOptions()


def method_codes(ds: Dataset) -> list[str]:
    return [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


# -- one test per action ---------------------------------------------------------------------------


def test_x_removes():
    ds = make_dataset()
    report = deidentify_dataset(ds, options=BASIC, key=KEY)
    for keyword in ("InstitutionAddress", "StudyDescription", "ImageComments", "PatientAge", "PatientWeight"):
        assert keyword not in ds, keyword
    assert report.actions["X"] >= 5
    assert "SourceApplicationEntityTitle" not in ds.file_meta


def test_z_empties():
    ds = make_dataset()
    report = deidentify_dataset(ds, options=BASIC, key=KEY)
    for keyword in ("AccessionNumber", "StudyID", "StudyDate", "StudyTime", "PatientBirthDate", "PatientSex"):
        assert keyword in ds, keyword
        assert ds[keyword].value in ("", None), keyword
    assert ds.ReferringPhysicianName == ""
    assert report.actions["Z"] >= 6


def test_patient_name_and_id_become_keyed_pseudonyms():
    ds = make_dataset()
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert ds.PatientID == pseudonym_id(KEY, "PAT-0042")
    assert str(ds.PatientName) == pseudonym_name(KEY, "Doe^Jane^Marie")
    assert len(ds.PatientID) == 16
    assert str(ds.PatientName).startswith("ANON^")


# A tag per VR whose action is D under the Basic Profile, and an original value valid for that VR.
D_BY_VR = {
    "AE": (0x21000140, "SECRETAE"),  # Destination AE
    "AS": (0x00720061, "033Y"),  # Selector AS Value
    "CS": (0x04000565, "CORRECT"),  # Reason for the Attribute Modification
    "DA": (0x00080023, "20200315"),  # Content Date
    "DT": (0x0008002A, "20200315101500"),  # Acquisition DateTime
    "LO": (0x00080080, "Saint Elsewhere Hospital"),  # Institution Name
    "LT": (0x00720068, "secret long text"),  # Selector LT Value
    "PN": (0x00081070, "Quinn^Harley"),  # Operators' Name
    "SH": (0x00081010, "CTSTATION7"),  # Station Name
    "ST": (0x0072006E, "secret short text"),  # Selector ST Value
    "TM": (0x00080033, "101512"),  # Content Time
    "UC": (0x00189367, "TUBE-42"),  # X-Ray Source ID
    "UR": (0x0072006A, "http://secret.example/"),  # Selector UR Value
    "UT": (0x00720070, "secret unlimited text"),  # Selector UT Value
}


@pytest.mark.parametrize("vr", sorted(D_BY_VR))
def test_d_writes_a_dummy_valid_for_the_vr(vr):
    tag, original = D_BY_VR[vr]
    ds = with_unknown_iod(make_dataset())
    ds.add_new(tag, vr, original)
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert vr == ds[tag].VR
    assert ds[tag].value == DUMMY_VALUES[vr]
    assert ds[tag].value != original


def test_d_on_binary_and_sequence():
    ds = with_unknown_iod(make_dataset())
    ds.add_new(0x00340002, "OB", b"secret-flow-id")  # Flow Identifier
    ds.add_new(0x00081072, "SQ", Sequence([code_item("X1", "Operator badge")]))  # Operator Identification
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert ds[0x00340002].value == b"\x00\x00"
    assert len(ds.OperatorIdentificationSequence) == 1
    assert len(ds.OperatorIdentificationSequence[0]) == 0


def test_k_keeps_and_deidentifies_inside():
    ds = with_unknown_iod(make_dataset())
    item = code_item("SEH", "Saint Elsewhere")
    item.OperatorsName = "Quinn^Harley"  # D inside a kept sequence
    item.add_new(0x00091010, "LO", "private inside a kept sequence")
    ds.InstitutionCodeSequence = Sequence([item])
    report = deidentify_dataset(ds, options=DeidOptions(retain_institution_identity=True), key=KEY)
    assert ds.InstitutionName == "Saint Elsewhere Hospital"
    kept = ds.InstitutionCodeSequence[0]
    assert kept.CodeValue == "SEH"
    assert kept.OperatorsName == "ANONYMOUS"
    assert 0x00091010 not in kept
    assert report.actions["K"] >= 2


def test_c_cleans_descriptors_of_identifying_values():
    ds = make_dataset()
    ds.SeriesDescription = "Follow-up ACC778899 born 1970-01-02 at Saint Elsewhere Hospital"
    report = deidentify_dataset(ds, options=DeidOptions(clean_descriptors=True), key=KEY)
    assert ds.StudyDescription == "CT chest for"
    assert ds.ImageComments == "Patient  moved during scan"
    assert ds.SeriesDescription == "Follow-up  born  at"
    assert report.actions["C"] >= 3


def test_u_replaces_uids_consistently_and_keeps_classes():
    ds = make_dataset()
    original = {
        keyword: ds[keyword].value
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")
    }
    report = deidentify_dataset(ds, options=BASIC, key=KEY)
    for keyword, uid in original.items():
        assert ds[keyword].value == keyed_uid(KEY, uid)
        assert ds[keyword].value.startswith("2.25.")
        assert len(ds[keyword].value) <= 64
    assert ds.SOPClassUID == CTImageStorage
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.ImplementationVersionName == "DICOMSVC_1"
    assert report.new_sop_instance_uid == ds.SOPInstanceUID
    assert report.new_study_instance_uid == ds.StudyInstanceUID
    assert report.actions["U"] >= 4


def test_unlisted_public_attributes_are_kept_and_their_text_cleaned():
    ds = make_dataset()
    ds.Manufacturer = "Doe Imaging"  # a planted leak in a kept public attribute
    ds.SoftwareVersions = "V1.2"
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert ds.Manufacturer == "Imaging"
    assert ds.SoftwareVersions == "V1.2"
    assert ds.Modality == "CT"
    assert ds.PixelData == b"\x01\x00\x02\x00\x03\x00\x04\x00"


def test_a_person_name_not_in_the_table_is_replaced_not_kept():
    ds = make_dataset()
    ds.SecondaryReviewerName = "Unlisted^Reviewer"  # appears nowhere else, so cleaning could not find it
    report = deidentify_dataset(ds, options=BASIC, key=KEY)
    assert ds.SecondaryReviewerName == DUMMY_VALUES["PN"]
    assert report.actions["D"] >= 1


# -- depth, private blocks, overlays and curves ----------------------------------------------------


def test_rules_apply_three_levels_deep():
    ds = with_unknown_iod(make_dataset())
    referenced = generate_uid()
    level3 = code_item("121311", "Localizer")
    level3.PatientName = "Doe^Jane"
    level3.OperatorsName = "Quinn^Harley"
    level3.ContentDate = "20200315"
    level3.add_new(0x00131010, "LO", "Jane Doe")
    level3.add_new(0x00130010, "LO", "ACME 1.1")
    level2 = Dataset()
    level2.ReferencedSOPClassUID = CTImageStorage
    level2.ReferencedSOPInstanceUID = referenced
    level2.PurposeOfReferenceCodeSequence = Sequence([level3])
    level1 = code_item("T-D3000", "Chest")
    level1.ReferencedImageSequence = Sequence([level2])
    ds.AnatomicRegionSequence = Sequence([level1])
    deidentify_dataset(ds, options=BASIC, key=KEY)
    out2 = ds.AnatomicRegionSequence[0].ReferencedImageSequence[0]
    out3 = out2.PurposeOfReferenceCodeSequence[0]
    assert out2.ReferencedSOPInstanceUID == keyed_uid(KEY, referenced)
    assert out2.ReferencedSOPClassUID == CTImageStorage
    assert str(out3.PatientName) == pseudonym_name(KEY, "Doe^Jane")
    assert out3.OperatorsName == "ANONYMOUS"
    assert out3.ContentDate == "19000101"
    assert 0x00131010 not in out3 and 0x00130010 not in out3
    assert out3.CodeMeaning == "Localizer"


def add_private_blocks(ds: Dataset) -> None:
    block = ds.private_block(0x0009, "ACME 1.1", create=True)
    block.add_new(0x01, "LO", "Jane Doe")
    block.add_new(0x02, "OB", b"\x00\x01\x02\x03")
    inner = Dataset()
    inner.PatientID = "PAT-0042"
    block.add_new(0x03, "SQ", Sequence([inner]))
    # ELSCINT1 (00E1,xx21) DLP is safe (Table E.3.10-1); (00E1,xx01) is not.
    ds.add_new(0x00E10010, "LO", "ELSCINT1")
    ds.add_new(0x00E11021, "DS", "123.4")
    ds.add_new(0x00E11001, "LO", "Jane Doe private")


def test_private_blocks_removed_by_default():
    ds = make_dataset()
    add_private_blocks(ds)
    report = deidentify_dataset(ds, options=BASIC, key=KEY)
    assert not [elem for elem in ds if elem.tag.is_private]
    assert report.removed_private == 7
    assert report.kept_private == 0


def test_safe_private_attributes_kept_with_their_creator():
    ds = make_dataset()
    add_private_blocks(ds)
    # The same creator in another block: the block byte differs from file to file.
    ds.add_new(0x00E10011, "LO", "ELSCINT1")
    ds.add_new(0x00E11121, "DS", "5.5")
    ds.add_new(0x00E11101, "LO", "unsafe in the second block")
    # A safe element byte under a creator that is not the listed one is not safe.
    ds.add_new(0x00E10012, "LO", "ELSCINT2")
    ds.add_new(0x00E11221, "DS", "9.9")
    report = deidentify_dataset(ds, options=DeidOptions(retain_safe_private=True), key=KEY)
    private = {elem.tag: elem.value for elem in ds if elem.tag.is_private}
    assert private == {0x00E10010: "ELSCINT1", 0x00E11021: 123.4, 0x00E10011: "ELSCINT1", 0x00E11121: 5.5}
    assert report.kept_private == 2
    assert 113111 in {int(code) for code in method_codes(ds)}


def test_overlay_and_curve_groups():
    def build() -> Dataset:
        ds = make_dataset()
        ds.add_new(0x60000010, "US", 2)  # Overlay Rows: not in the table, kept
        ds.add_new(0x60003000, "OW", b"\xff\x00")  # Overlay Data
        ds.add_new(0x60024000, "LT", "Marked by Doe")  # Overlay Comments, second overlay group
        ds.add_new(0x50003000, "OB", b"\x01\x02")  # Curve Data
        ds.add_new(0x50020005, "US", 2)  # Curve Dimensions
        return ds

    ds = build()
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert 0x60003000 not in ds and 0x60024000 not in ds
    assert 0x50003000 not in ds and 0x50020005 not in ds
    # Without its Overlay Data the Overlay Plane would be invalid: the whole group goes.
    assert not [tag for tag in list(ds.keys()) if 0x6000 <= tag >> 16 <= 0x60FF]

    ds = build()
    deidentify_dataset(ds, options=DeidOptions(clean_graphics=True), key=KEY)
    assert ds[0x60003000].value == b"\xff\x00"
    assert ds[0x60024000].value == "Marked by"
    assert 0x50003000 in ds
    assert "113103" in method_codes(ds)


# -- consistency across instances -------------------------------------------------------------------


def test_references_between_instances_remapped_consistently():
    first = make_dataset()
    second = with_unknown_iod(
        make_dataset(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID)
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.SourceImageSequence = Sequence([reference])
    deidentify_dataset(first, options=BASIC, key=KEY)
    deidentify_dataset(second, options=BASIC, key=KEY)
    assert second.SourceImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID


def test_one_study_two_requests_share_study_and_series_and_a_new_key_changes_them():
    study, series = generate_uid(), generate_uid()
    reports = [
        deidentify_dataset(make_dataset(study_uid=study, series_uid=series), options=BASIC, key=KEY)
        for _ in range(2)
    ]
    assert reports[0].new_study_instance_uid == reports[1].new_study_instance_uid != study
    assert reports[0].new_series_instance_uid == reports[1].new_series_instance_uid != series
    other = deidentify_dataset(make_dataset(study_uid=study, series_uid=series), options=BASIC, key=OTHER_KEY)
    assert other.new_study_instance_uid != reports[0].new_study_instance_uid
    assert other.new_series_instance_uid != reports[0].new_series_instance_uid
    other_ds = make_dataset(patient_id="PAT-0042")
    deidentify_dataset(other_ds, options=BASIC, key=OTHER_KEY)
    assert other_ds.PatientID != pseudonym_id(KEY, "PAT-0042")


# -- options ------------------------------------------------------------------------------------------


def test_modified_dates_keep_intervals_between_studies_of_one_patient():
    options = DeidOptions(retain_modified_dates=True)
    first = make_dataset(study_date="20200315")
    second = make_dataset(study_date="20210601")
    report_first = deidentify_dataset(first, options=options, key=KEY)
    report_second = deidentify_dataset(second, options=options, key=KEY)
    assert report_first.date_shift_days == report_second.date_shift_days
    assert 1 <= report_first.date_shift_days <= 3650
    assert first.StudyDate != "20200315"
    import datetime as dt

    def day(value: str) -> dt.date:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))

    assert (day(second.StudyDate) - day(first.StudyDate)).days == (
        dt.date(2021, 6, 1) - dt.date(2020, 3, 15)
    ).days
    assert (dt.date(2020, 3, 15) - day(first.StudyDate)).days == report_first.date_shift_days
    assert first.AcquisitionDateTime == first.StudyDate + "101500.000000"
    assert first.StudyTime == "101500"
    assert first.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "113107" in method_codes(first)
    other_patient = make_dataset(patient_id="PAT-9999", study_date="20200315")
    assert deidentify_dataset(other_patient, options=options, key=KEY).date_shift_days is not None


def test_full_dates_keep_dates_and_say_so():
    ds = make_dataset()
    report = deidentify_dataset(ds, options=DeidOptions(retain_full_dates=True), key=KEY)
    assert ds.StudyDate == "20200315"
    assert ds.ContentTime == "101512"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert report.date_shift_days is None
    assert "113106" in method_codes(ds)


def test_without_date_options_dates_are_removed():
    ds = make_dataset()
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.StudyDate == ""
    assert method_codes(ds) == ["113100"]


def test_retain_patient_characteristics():
    ds = make_dataset()
    deidentify_dataset(ds, options=DeidOptions(retain_patient_characteristics=True), key=KEY)
    assert ds.PatientSex == "F"
    assert ds.PatientAge == "050Y"
    assert ds.PatientWeight == 70
    assert "113108" in method_codes(ds)


def test_retain_device_identity():
    ds = make_dataset()
    deidentify_dataset(ds, options=DeidOptions(retain_device_identity=True), key=KEY)
    assert ds.StationName == "CTSTATION7"
    assert ds.DeviceSerialNumber == "SN-55512"
    assert "113109" in method_codes(ds)


def test_retain_uids():
    ds = make_dataset()
    original_sop, original_study = ds.SOPInstanceUID, ds.StudyInstanceUID
    deidentify_dataset(ds, options=DeidOptions(retain_uids=True), key=KEY)
    assert ds.SOPInstanceUID == original_sop
    assert ds.StudyInstanceUID == original_study
    assert ds.file_meta.MediaStorageSOPInstanceUID == original_sop
    assert "113110" in method_codes(ds)


def test_clean_structured_content():
    def build() -> Dataset:
        ds = make_dataset()
        item = Dataset()
        item.ValueType = "TEXT"
        item.ConceptNameCodeSequence = Sequence([code_item("121071", "Finding")])
        item.TextValue = "Jane Doe (PAT-0042) has a small nodule"
        ds.ContentSequence = Sequence([item])
        return ds

    ds = build()
    deidentify_dataset(ds, options=BASIC, key=KEY)
    assert len(ds.ContentSequence) == 1 and len(ds.ContentSequence[0]) == 0

    ds = build()
    deidentify_dataset(ds, options=DeidOptions(clean_structured_content=True), key=KEY)
    assert ds.ContentSequence[0].TextValue == "() has a small nodule"
    assert ds.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    assert "113104" in method_codes(ds)


def test_burned_in_annotation_refused_unless_accepted():
    ds = make_dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationRefusedError) as refused:
        deidentify_dataset(ds, options=BASIC, key=KEY)
    assert "BurnedInAnnotation" in refused.value.detail
    assert ds.PatientID == "PAT-0042"  # refused before anything changed

    deidentify_dataset(ds, options=DeidOptions(accept_burned_in_annotation=True), key=KEY)
    codes = method_codes(ds)
    assert "113101" not in codes and "113102" not in codes
    assert "Burned-in annotation not removed" in ds.DeidentificationMethod


def test_output_declares_the_profile_and_the_report_holds_no_patient_data():
    ds = make_dataset()
    add_private_blocks(ds)
    options = DeidOptions(clean_descriptors=True, retain_safe_private=True)
    report = deidentify_dataset(ds, options=options, key=KEY)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod[0].startswith("DICOMSVC PS3.15-2024b Basic Profile")
    assert method_codes(ds) == ["113100", "113111", "113105"]
    assert all(item.CodingSchemeDesignator == "DCM" for item in ds.DeidentificationMethodCodeSequence)
    text = json.dumps(report.to_dict())
    for secret in ("Doe", "Jane", "PAT-0042", "19700102", "ACC778899", "Elsewhere"):
        assert secret not in text
    assert report.to_dict()["options"] == ["retain_safe_private", "clean_descriptors"]
    assert report.method_codes == ["113100", "113111", "113105"]


def test_empty_key_refused():
    with pytest.raises(ValueError, match="key"):
        deidentify_dataset(make_dataset(), options=BASIC, key=b"")


def test_date_shift_handles_multiple_values_ranges_and_datetimes():
    from dicom.services.deid.engine import shift_date_value

    assert shift_date_value("20200301", "DA", 1) == "20200229"
    assert shift_date_value("20200301\\20200302", "DA", 1) == "20200229\\20200301"
    assert shift_date_value("20200301-20200310", "DA", 10) == "20200220-20200229"
    assert shift_date_value("20200301101500.5+0100", "DT", 1) == "20200229101500.5+0100"
    assert shift_date_value("2020", "DT", 400) == "2019"
    assert shift_date_value("20201345", "DA", 1) == ""  # not a date: nothing of it survives


def test_dataset_without_file_meta():
    ds = make_dataset()
    del ds.file_meta
    # Without a transfer syntax its pixel data cannot be decoded to be checked for burned-in text.
    with pytest.raises(
        DeidentificationRefusedError, match="cannot be decoded to check it for burned-in text"
    ):
        deidentify_dataset(ds, options=BASIC, key=KEY)
    del ds.PixelData
    report = deidentify_dataset(ds, options=BASIC, key=KEY)
    assert report.new_sop_instance_uid == ds.SOPInstanceUID
    assert (
        not hasattr(ds, "file_meta")
        or ds.file_meta is None
        or "MediaStorageSOPInstanceUID" not in ds.file_meta
    )
