"""The flat metadata object the API returns, read from a dataset's header.

The validator collects the raw header elements named here in the same walk that checks the file,
so the upload path never parses a file twice and never decodes pixel data for its metadata.
"""

import datetime as dt
from typing import Any

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from dicom.services.errors import InvalidDicomError

# API key -> DICOM keyword, in the order the README documents them.
METADATA_KEYWORDS: dict[str, str] = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "patient_age": "PatientAge",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "study_description": "StudyDescription",
    "series_description": "SeriesDescription",
    "accession_number": "AccessionNumber",
    "modality": "Modality",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "series_number": "SeriesNumber",
    "instance_number": "InstanceNumber",
    "rows": "Rows",
    "columns": "Columns",
    "number_of_frames": "NumberOfFrames",
    "bits_allocated": "BitsAllocated",
    "photometric_interpretation": "PhotometricInterpretation",
    "manufacturer": "Manufacturer",
    "manufacturer_model_name": "ManufacturerModelName",
    "institution_name": "InstitutionName",
    "body_part_examined": "BodyPartExamined",
    "burned_in_annotation": "BurnedInAnnotation",
    "patient_identity_removed": "PatientIdentityRemoved",
}

_METADATA_TAGS: dict[str, int] = {key: tag_for_keyword(keyword) for key, keyword in METADATA_KEYWORDS.items()}

# Header values the search index keeps (``DicomFile`` columns) that the API's metadata object does
# not have: its keys are a fixed contract. :func:`extract_metadata` hands them over under
# :data:`INDEX_ONLY`, which ``apply_header`` takes out before the metadata is stored.
INDEX_ONLY = "_index_only"
INDEX_ONLY_KEYWORDS: dict[str, str] = {
    "referring_physician_name": "ReferringPhysicianName",
    "study_id": "StudyID",
    "performed_procedure_step_start_date": "PerformedProcedureStepStartDate",
    "performed_procedure_step_start_time": "PerformedProcedureStepStartTime",
}
_INDEX_ONLY_TAGS: dict[str, int] = {
    key: tag_for_keyword(keyword) for key, keyword in INDEX_ONLY_KEYWORDS.items()
}

# The keys whose values are patient data: masked for staff without the view_phi permission.
PHI_KEYS = frozenset(
    {"patient_id", "patient_name", "patient_birth_date", "patient_sex", "patient_age", "accession_number"}
)

# Elements the validator must hand over from its walk: the metadata plus what checks need.
HEADER_TAGS: frozenset[int] = frozenset(
    tag_for_keyword(keyword)
    for keyword in (
        *METADATA_KEYWORDS.values(),
        *INDEX_ONLY_KEYWORDS.values(),
        "SpecificCharacterSet",
        "SamplesPerPixel",
        "BitsStored",
        "PixelRepresentation",
    )
)


def _iso_date(value: str) -> str | None:
    text = value.strip()
    if len(text) == 8 and text.isdigit():
        try:
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
        except ValueError:
            return None
    # Pre-3.0 ACR-NEMA style 'YYYY.MM.DD'.
    if len(text) == 10 and text[4] == "." and text[7] == ".":
        return _iso_date(text.replace(".", ""))
    return None


def _iso_time(value: str) -> str | None:
    text = value.strip().replace(":", "")
    if not text:
        return None
    main, _, fraction = text.partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6):
        return None
    parts = [main[i : i + 2] for i in range(0, len(main), 2)]
    while len(parts) < 3:
        parts.append("00")
    iso = ":".join(parts)
    return f"{iso}.{fraction}" if fraction.isdigit() else iso


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, PersonName):
        return str(value) or None
    if isinstance(value, MultiValue | list | tuple):
        items = [_plain(v) for v in value]
        return items or None
    if isinstance(value, bytes):
        return None
    if isinstance(value, int | float | str):
        if isinstance(value, str):
            value = value.strip()
            return value or None
        # IS/DS subclasses of int/float serialise as plain numbers.
        return int(value) if isinstance(value, int) else float(value)
    return str(value) or None


def extract_metadata(ds: Dataset) -> dict[str, Any]:
    """Return the flat metadata of ``ds``: every key of ``METADATA_KEYWORDS``, absent values ``None``.

    Dates come out as ISO 8601 (``2024-01-31``), times as ``HH:MM:SS[.ffffff]``; a value that is
    not a valid date stays ``None`` rather than passing malformed text on. Reads only the header.
    The values of ``INDEX_ONLY_KEYWORDS`` (same conventions) come along as one more key,
    :data:`INDEX_ONLY`, for the search index only: never part of the stored metadata object.
    """
    result = _read(ds, _METADATA_TAGS, METADATA_KEYWORDS)
    if result["number_of_frames"] is None and result["rows"] is not None:
        result["number_of_frames"] = 1
    file_meta = getattr(ds, "file_meta", None)
    result["transfer_syntax_uid"] = str(file_meta.TransferSyntaxUID) if file_meta is not None else None
    result[INDEX_ONLY] = _read(ds, _INDEX_ONLY_TAGS, INDEX_ONLY_KEYWORDS)
    return result


def _read(ds: Dataset, tags: dict[str, int], keywords: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, tag in tags.items():
        try:
            element = ds.get(tag)
        except (NotImplementedError, ValueError, TypeError, LookupError, UnicodeError) as error:
            # pydicom cannot convert the value (an unknown VR, bytes that fit no VR): bad input.
            keyword = keywords[key]
            raise InvalidDicomError(
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword} cannot be read ({type(error).__name__})"
            ) from None
        value = _plain(element.value) if element is not None else None
        if value is not None and element.VR == "DA":
            value = _iso_date(value if isinstance(value, str) else str(value))
        elif value is not None and element.VR == "TM":
            value = _iso_time(value if isinstance(value, str) else str(value))
        result[key] = value
    return result
