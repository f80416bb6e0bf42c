"""The verification pass refuses output that still identifies the patient, naming only the attribute."""

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom.services.deid import DeidOptions, collect_identifiers, deidentify_dataset, verify_deidentified
from dicom.services.errors import DeidentificationVerificationError

from .datasets import KEY, make_dataset

BASIC = DeidOptions()


def deidentified_with_fingerprint(options: DeidOptions = BASIC):
    ds = make_dataset()
    fingerprint = collect_identifiers(ds)
    deidentify_dataset(ds, options=options, key=KEY)
    verify_deidentified(ds, fingerprint, options=options)  # clean output passes
    return ds, fingerprint


def refusal(ds: Dataset, fingerprint, options: DeidOptions = BASIC) -> str:
    with pytest.raises(DeidentificationVerificationError) as error:
        verify_deidentified(ds, fingerprint, options=options)
    detail = error.value.detail
    for secret in ("Doe", "Jane", "PAT-0042", "19700102", "ACC778899", "Elsewhere"):
        assert secret not in detail
    return detail


def test_fingerprint_holds_identifiers_and_uids():
    ds = make_dataset()
    fingerprint = collect_identifiers(ds)
    assert {
        "doe",
        "jane",
        "marie",
        "doe^jane^marie",
        "pat-0042",
        "acc778899",
        "19700102",
        "1970-01-02",
    } <= set(fingerprint.identifiers)
    assert ds.SOPInstanceUID in fingerprint.uids
    assert "1.2.840.10008.5.1.4.1.1.2" not in fingerprint.uids  # a SOP class is not an instance UID
    assert fingerprint.patient_key == "PAT-0042"


def test_catches_a_name_planted_in_a_kept_text_attribute():
    ds, fingerprint = deidentified_with_fingerprint()
    ds.Manufacturer = "Scanned for Jane"
    assert refusal(ds, fingerprint) == (
        "verification failed: (0008,0070) Manufacturer contains an identifying value of the original"
    )


def test_catches_identifiers_at_depth_in_any_text_vr():
    ds, fingerprint = deidentified_with_fingerprint()
    item = Dataset()
    inner = Dataset()
    inner.TextValue = "birth 02.01.1970"
    item.ContentSequence = Sequence([inner])
    ds.AnatomicRegionSequence = Sequence([item])
    assert "(0040,A160) TextValue" in refusal(ds, fingerprint)


def test_catches_a_removed_attribute():
    ds, fingerprint = deidentified_with_fingerprint()
    ds.OtherPatientIDsSequence = Sequence()
    assert "(0010,1002) OtherPatientIDsSequence is present" in refusal(ds, fingerprint)


def test_catches_an_original_value_in_a_z_or_d_attribute():
    ds, fingerprint = deidentified_with_fingerprint()
    ds.PatientID = fingerprint.patient_id  # Z/D: the original must not survive
    assert "(0010,0020) PatientID still holds its original value" in refusal(ds, fingerprint)
    ds, fingerprint = deidentified_with_fingerprint()
    ds.StationName = "CTSTATION7"  # X/Z/D, Type 3 in a CT image: removed, so present is a failure
    assert "(0008,1010) StationName is present although the profile removes it" in refusal(ds, fingerprint)


def test_catches_an_original_uid_anywhere_including_file_meta():
    ds, fingerprint = deidentified_with_fingerprint()
    original_sop = next(uid for uid in fingerprint.uids if uid != ds.SOPInstanceUID)
    reference = Dataset()
    reference.ReferencedSOPInstanceUID = original_sop
    ds.DerivationCodeSequence = Sequence([Dataset()])
    ds.DerivationCodeSequence[0].ReferencedSOPSequence = Sequence([reference])
    assert "(0008,1155) ReferencedSOPInstanceUID still holds an original UID" in refusal(ds, fingerprint)

    ds, fingerprint = deidentified_with_fingerprint()
    ds.file_meta.MediaStorageSOPInstanceUID = next(iter(fingerprint.uids))
    assert "original UID" in refusal(ds, fingerprint)


def test_catches_private_attributes():
    ds, fingerprint = deidentified_with_fingerprint()
    ds.add_new(0x00090010, "LO", "ACME 1.1")
    ds.add_new(0x00091001, "OB", b"\x00\x01")
    assert "(0009,0010) Private" in refusal(ds, fingerprint)

    options = DeidOptions(retain_safe_private=True)
    ds, fingerprint = deidentified_with_fingerprint(options)
    ds.add_new(0x00E10010, "LO", "ELSCINT1")
    ds.add_new(0x00E11021, "DS", "1.5")  # safe
    verify_deidentified(ds, fingerprint, options=options)
    ds.add_new(0x00E11001, "LO", "unsafe")
    assert "(00E1,1001) Private is a private attribute not listed as safe" in refusal(
        ds, fingerprint, options
    )


def test_retained_values_are_not_leaks():
    options = DeidOptions(retain_institution_identity=True, retain_uids=True)
    ds, fingerprint = deidentified_with_fingerprint(options)
    assert ds.InstitutionName == "Saint Elsewhere Hospital"
    verify_deidentified(ds, fingerprint, options=options)
