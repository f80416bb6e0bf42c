"""Datasets built for the de-identification tests: realistic headers with planted identifiers."""

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

KEY = b"test-key-0123456789abcdef0123456789"
OTHER_KEY = b"another-key-0123456789abcdef012345"


def make_dataset(
    *,
    patient_id: str = "PAT-0042",
    patient_name: str = "Doe^Jane^Marie",
    study_uid: str | None = None,
    series_uid: str | None = None,
    study_date: str = "20200315",
) -> Dataset:
    """A CT header with the usual identifying attributes, file meta and tiny native pixel data."""
    ds = Dataset()
    sop_uid = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITALPACS"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700102"
    ds.PatientSex = "F"
    ds.PatientAge = "050Y"
    ds.PatientWeight = "70"
    ds.AccessionNumber = "ACC778899"
    ds.StudyID = "STUDY9"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.ContentTime = "101512"
    ds.AcquisitionDateTime = study_date + "101500.000000"
    ds.InstitutionName = "Saint Elsewhere Hospital"
    ds.InstitutionAddress = "12 Elm Street Springfield"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.OperatorsName = "Quinn^Harley"
    ds.StationName = "CTSTATION7"
    ds.DeviceSerialNumber = "SN-55512"
    ds.Manufacturer = "ACME Medical"
    ds.StudyDescription = "CT chest for Jane Doe"
    ds.ImageComments = "Patient Doe moved during scan"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"
    return ds


def code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


# A SOP class the IOD table does not know: combined actions then fall back to the table's stdCompIOD
# column (required: the last, non-removing branch). Tests of the generic D, Z and U mechanics use it.
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.8.498.99999"


def with_unknown_iod(ds):
    ds.SOPClassUID = UNKNOWN_SOP_CLASS
    ds.file_meta.MediaStorageSOPClassUID = UNKNOWN_SOP_CLASS
    return ds
