"""Facts about attributes and values shared by the engine, the fingerprint and the verification pass.

These are data and matching rules, not a walk: the engine and the verifier each walk datasets their
own way and only agree here on what an identifying string, a text value and a remappable UID are.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from pydicom import config
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# Value representations whose values are free or coded text a person could type a name into.
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})
STRING_VRS = TEXT_VRS | frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
# Coded values (Code Value, Coding Scheme Designator and Version, Long and URN Code Value, Mapping
# Resource): vocabulary, not free text. Cleaning is for free text: these are never cleaned, so a
# designator such as TEST survives a patient called Test.
CODE_VALUE_TAGS = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080105, 0x00080119, 0x00080120})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})
DATE_VRS = frozenset({"DA", "DT"})

# UI attributes that name a class, a syntax or a scheme rather than an instance: never remapped.
# Any attribute whose keyword ends in "ClassUID" is also one of these.
NON_INSTANCE_UID_KEYWORDS = frozenset(
    {
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "EncryptedContentTransferSyntaxUID",
        "SelectedTransferSyntaxUID",
        "CodingSchemeUID",
        "ContextGroupExtensionCreatorUID",
        "MappingResourceUID",
        "TemplateExtensionOrganizationUID",
        "TemplateExtensionCreatorUID",
        "PrivateInformationCreatorUID",
        "RelatedGeneralSOPClassUID",
        "ImplementationClassUID",
        "InstanceCreatorUID",
        "DimensionOrganizationUID",
    }
)

# Attributes whose values are identifying wherever they occur (besides every PN and every date).
IDENTIFYING_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "AdmissionID",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PersonAddress",
    "PersonTelephoneNumbers",
    "RegionOfResidence",
    "StationName",
    "DeviceSerialNumber",
    "MilitaryRank",
    "BranchOfService",
)
IDENTIFYING_TAGS = frozenset(tag_for_keyword(keyword) for keyword in IDENTIFYING_KEYWORDS)

MIN_IDENTIFIER_LENGTH = 3  # "names and name components longer than 2 characters"
MIN_NUMERIC_IDENTIFIER_LENGTH = 4  # a 3-digit number is too common to mean a patient


# tag (a plain int: a BaseTag key would compare through its Python __eq__) -> dictionary VR.
_DICTIONARY_VRS: dict[int, str] = {}
_DICTIONARY_VRS_SIZE = 8192


def dictionary_vr(tag: int) -> str:
    """The data dictionary's VR for a tag, ``UN`` for an unknown one."""
    tag = int(tag)
    vr = _DICTIONARY_VRS.get(tag)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        if len(_DICTIONARY_VRS) >= _DICTIONARY_VRS_SIZE:
            _DICTIONARY_VRS.clear()
        _DICTIONARY_VRS[tag] = vr
    return vr


def element_vr(element) -> str:
    """VR of a raw or converted element; implicit-VR raw elements fall back to the dictionary."""
    vr = element.VR
    if vr and vr != "UN":
        return vr
    # Implicit VR, or UN for a public tag the dictionary knows: pydicom converts both to the
    # dictionary's VR, so the rules must see that VR too.
    tag = element.tag
    return dictionary_vr(tag) if not vr or not tag >> 16 & 1 else vr


def value_strings(value) -> list[str]:
    """A converted element value as stripped strings (one per value of a multi-valued element)."""
    if value is None or isinstance(value, bytes):
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(item).strip(" \0") for item in value if item is not None and str(item).strip(" \0")]
    text = str(value).strip(" \0")
    return [text] if text else []


def loaded(ds: Dataset, tag: int, element):
    """What ``ds.get_item(tag)`` returns, given the element as ``ds`` stores it: a raw element without
    a value (deferred, or empty) is read and converted, as ``get_item`` does."""
    if element.__class__ is RawDataElement and element.value is None:
        return ds.get_item(tag)
    return element


def element_strings(ds: Dataset, tag: int, vr: str, element=None) -> list[str]:
    """The values of a string element as stripped strings, without converting it when possible.

    A raw (not yet converted) string element whose bytes are ASCII without an ISO 2022 escape reads
    the same in every DICOM character set, so it is decoded here directly; anything else goes
    through pydicom's conversion (which handles the Specific Character Set). ``element`` is the
    element as ``ds`` holds it, when the caller has it already (a deferred one is read here).
    """
    element = ds.get_item(tag) if element is None else loaded(ds, tag, element)
    if element.__class__ is RawDataElement:
        raw = element.value
        if raw.__class__ is bytes and raw.isascii() and b"\x1b" not in raw:
            return [part for part in (item.strip(" \0") for item in raw.decode("ascii").split("\\")) if part]
    elif element.__class__ is DataElement:
        return value_strings(element.value)
    return value_strings(ds[tag].value)


def new_element(tag: int, vr: str, value) -> DataElement:
    """A data element the engine writes; its values are valid by construction, so not re-validated."""
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def keyword_of(tag: int) -> str:
    """Keyword for error details (``Private`` or ``Unknown`` where the dictionary has none)."""
    if tag >> 16 & 1:
        return "Private"
    return keyword_for_tag(tag) or "Unknown"


def describe(tag: int) -> str:
    """``(GGGG,EEEE) Keyword``: how an attribute is named in a detail, never with its value."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword_of(tag)}"


@lru_cache(maxsize=8192)
def is_instance_uid_tag(tag: int) -> bool:
    """Whether a UI attribute identifies an instance (so is remapped), not a class or syntax."""
    keyword = keyword_for_tag(tag)
    if not keyword:
        return True
    return not (keyword.endswith("ClassUID") or keyword in NON_INSTANCE_UID_KEYWORDS)


def is_well_known_uid(uid: str) -> bool:
    """A UID the standard defines (SOP classes, transfer syntaxes, coding schemes, ...)."""
    return uid in UID_dictionary


def date_strings(value: str) -> list[str]:
    """The common spellings of a DICOM date ``YYYYMMDD`` (or the date part of a DT)."""
    digits = value.strip()[:8]
    if len(digits) != 8 or not digits.isdigit():
        return []
    year, month, day = digits[:4], digits[4:6], digits[6:8]
    return [
        digits,
        f"{year}-{month}-{day}",
        f"{year}/{month}/{day}",
        f"{year}.{month}.{day}",
        f"{day}/{month}/{year}",
        f"{month}/{day}/{year}",
        f"{day}.{month}.{year}",
        f"{day}-{month}-{year}",
    ]


def identifier_strings(value: str, vr: str) -> list[str]:
    """The identifying strings one value contributes, lower-cased.

    A name gives the whole value and each component (family, given, middle; not prefix or suffix),
    and each word of a component; a date gives its common spellings; anything else gives itself.
    Strings shorter than 3 characters (4 for numbers only) are dropped as too common to search for.
    """
    value = value.strip(" \0")
    if not value:
        return []
    if vr in DATE_VRS:
        candidates = date_strings(value)
    elif vr == "PN":
        candidates = [value]
        for group in value.split("="):
            candidates.append(group)
            for component in group.split("^")[:3]:
                candidates.append(component)
                candidates.extend(component.split())
    else:
        candidates = [value, *value.split("\\")]
    found = []
    for candidate in candidates:
        candidate = candidate.strip(" ^=\\").lower()
        if len(candidate) < MIN_IDENTIFIER_LENGTH:
            continue
        if candidate.isdigit() and len(candidate) < MIN_NUMERIC_IDENTIFIER_LENGTH:
            continue
        found.append(candidate)
    return found


def _bounded(text: str, start: int, end: int, ident: str) -> bool:
    # A match counts only as a whole word: "ann" is found in "Ann Lee" but not in "annual".
    if start > 0 and ident[0].isalnum() and text[start - 1].isalnum():
        return False
    return not (end < len(text) and ident[-1].isalnum() and text[end].isalnum())


def find_identifier(text: str, identifiers: tuple[str, ...]) -> str | None:
    """The first identifier (lower-cased) found in ``text`` as a whole word, or ``None``."""
    lowered = text.lower()
    for ident in identifiers:
        start = lowered.find(ident)
        while start >= 0:
            if _bounded(lowered, start, start + len(ident), ident):
                return ident
            start = lowered.find(ident, start + 1)
    return None


# Not cached here: the identifiers are patient data, and a cache would keep them for the process's
# life (Python's own bounded cache of compiled patterns still holds the last few hundred).
def _identifier_pattern(ident: str) -> re.Pattern[str]:
    before = r"(?<![^\W_])" if ident[0].isalnum() else ""
    after = r"(?![^\W_])" if ident[-1].isalnum() else ""
    return re.compile(before + re.escape(ident) + after, re.IGNORECASE)


def remove_identifiers(text: str, identifiers: tuple[str, ...]) -> str:
    """``text`` without any of ``identifiers`` (whole words, any case); ``""`` if that cannot be done."""
    for _ in range(len(identifiers) + 2):
        ident = find_identifier(text, identifiers)
        if ident is None:
            return text
        text = _identifier_pattern(ident).sub("", text)
    return text if find_identifier(text, identifiers) is None else ""


# Identifying strings shorter than this are not searched for in binary values.
MIN_BINARY_IDENTIFIER = 4
# Binary VRs whose values are searched for identifying text when the table does not list them.
BINARY_VRS = frozenset({"OB", "OW", "UN", "OD", "OF", "OL", "OV", "OB or OW"})
_UID_IN_TEXT = re.compile(r"(?<![0-9.])[0-2](?:\.(?:0|[1-9][0-9]*))+(?![0-9.])")


def binary_holds_identifier(value: bytes, identifiers: tuple[str, ...]) -> bool:
    """Whether ``value`` holds one of ``identifiers`` as ASCII or UTF-16 (either byte order), any case.

    Case folding is on the bytes: ASCII letters in ASCII and UTF-16 alike.
    """
    if not value or not identifiers:
        return False
    lowered = bytes(value).lower()
    needles = [
        encoded
        for ident in identifiers
        if len(ident) >= MIN_BINARY_IDENTIFIER  # a short string turns up in binary data by chance
        for encoded in (
            ident.encode("latin-1", "ignore"),
            ident.encode("utf-16-le"),
            ident.encode("utf-16-be"),
        )
    ]
    if len(lowered) < LARGE_BINARY_VALUE:
        return any(needle in lowered for needle in needles)
    return _holds_any(lowered, needles)


# From this size a binary value is searched for all identifiers at once (a waveform, an
# encapsulated document): one substring search per identifier and encoding took milliseconds.
LARGE_BINARY_VALUE = 16 * 1024


def _holds_any(haystack: bytes, needles: list[bytes]) -> bool:
    """``any(needle in haystack for needle in needles)``, in one vectorised pass over ``haystack``.

    Every position whose first two byte pairs begin some needle (two 65,536-entry tables indexed by
    the 16-bit value at each offset) is a candidate; only candidates are compared with the needles
    that start with their four bytes. Needles under four bytes are searched for as they are.
    """
    if any(len(needle) < 4 and needle in haystack for needle in needles):
        return True
    by_prefix: dict[bytes, list[bytes]] = {}
    for needle in needles:
        if len(needle) >= 4:
            by_prefix.setdefault(needle[:4], []).append(needle)
    if not by_prefix or len(haystack) < 4:
        return False
    first = np.zeros(65536, dtype=bool)
    second = np.zeros(65536, dtype=bool)
    for prefix in by_prefix:
        first[prefix[0] | prefix[1] << 8] = True
        second[prefix[2] | prefix[3] << 8] = True
    size = len(haystack)
    # The little-endian 16-bit value at every even offset, and at every odd one.
    pairs = (
        np.frombuffer(haystack, dtype="<u2", count=size // 2),
        np.frombuffer(haystack, dtype="<u2", offset=1, count=(size - 1) // 2),
    )
    for parity, values in enumerate(pairs):
        hits = np.flatnonzero(np.take(first, values[:-1]))
        hits = hits[np.take(second, values[hits + 1])]
        for index in hits.tolist():
            position = 2 * index + parity
            for needle in by_prefix.get(haystack[position : position + 4], ()):
                if haystack.startswith(needle, position):
                    return True
    return False


def uids_in_text(text: str) -> list[str]:
    """The UIDs written inside a text value (dotted numbers of three or more components)."""
    return [match for match in _UID_IN_TEXT.findall(text) if match.count(".") >= 2]
