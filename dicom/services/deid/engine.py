"""The de-identification engine: PS3.15 Annex E Basic Profile plus the chosen options.

Pure pydicom: no Django, no settings. The caller passes the key. See ``docs/deidentification.md``.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import logging
import os
import stat
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError as PydicomInvalidDicomError
from pydicom.sequence import Sequence

from dicom.services.errors import DeidentificationRefusedError, DicomServiceError, InvalidDicomError
from dicom.services.rendering import PixelElement, pixel_element_at, pixel_element_in

from . import pixels as pixel_policy
from . import streaming
from .attributes import (
    BINARY_VRS,
    CODE_VALUE_TAGS,
    DATE_VRS,
    STRING_VRS,
    TEXT_VRS,
    binary_holds_identifier,
    element_strings,
    element_vr,
    find_identifier,
    is_instance_uid_tag,
    is_well_known_uid,
    loaded,
    new_element,
    remove_identifiers,
    uids_in_text,
)
from .fingerprint import Fingerprint, collect_identifiers
from .iod import MISSING, Requirements, requirements_for
from .keyed import date_shift_days, keyed_uid, pseudonym_id, pseudonym_name
from .options import BASIC_PROFILE_CODE, OPTION_CODES, DeidOptions
from .rules import CLEAN, DUMMY, KEEP, REMOVE, SHIFT, UID, ZERO, RuleSet, ruleset_for
from .verify import verify_deidentified

logger = logging.getLogger(__name__)

PROJECT_IMPLEMENTATION_CLASS_UID = "2.25.4427826618977372476651161393518730348"
PROJECT_IMPLEMENTATION_VERSION_NAME = "DICOMSVC_1"

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
BURNED_IN_ANNOTATION = 0x00280301
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
SOP_CLASS_UID = 0x00080016
IMPLEMENTATION_CLASS_UID = 0x00020012
IMPLEMENTATION_VERSION_NAME = 0x00020013
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
DEIDENTIFICATION_METHOD_CODE_SEQUENCE = 0x00120064
LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = 0x00280303
CODE_VALUE = 0x00080100
CODING_SCHEME_DESIGNATOR = 0x00080102
CODE_MEANING = 0x00080104
# File meta attributes that name the sending or receiving system, or carry private information.
FILE_META_REMOVED = (
    0x00020016,  # Source Application Entity Title
    0x00020017,  # Sending Application Entity Title
    0x00020018,  # Receiving Application Entity Title
    0x00020100,  # Private Information Creator UID
    0x00020102,  # Private Information
)

# Dummies for D, valid for their VR. The verification pass treats these values as not identifying.
DUMMY_VALUES: dict[str, object] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMOUS",
    "LT": "ANONYMOUS",
    "PN": "ANONYMOUS",
    "SH": "ANONYMOUS",
    "ST": "ANONYMOUS",
    "TM": "000000",
    "UC": "ANONYMOUS",
    "UR": "urn:anonymous",
    "UT": "ANONYMOUS",
    "AT": 0,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}
BINARY_DUMMY = b"\x00\x00"
# Values a reduced item keeps where they are Type 1: coded strings and numbers (a frame number, a
# Value Type) carry no patient data, and a dummy would not be a value the IOD allows.
KEPT_IN_REDUCED_ITEMS = frozenset({"CS", "IS", "DS", "US", "UL", "SS", "SL", "UV", "SV", "FL", "FD", "AT"})
# Keys each directory record of a DICOMDIR must hold (PS3.3 F.5.1-F.5.3 and F.5.18): Type 1 filled
# with a dummy (the de-identified files may hold them empty, as Type 2), Type 2 present, maybe empty.
DIRECTORY_RECORD_SEQUENCE = 0x00041220
DIRECTORY_RECORD_TYPE = 0x00041430
DIRECTORY_RECORD_KEYS: dict[str, tuple[tuple[int, str, str], ...]] = {
    "PATIENT": ((0x00100010, "PN", "2"), (0x00100020, "LO", "1")),
    "STUDY": (
        (0x00080020, "DA", "1"),
        (0x00080030, "TM", "1"),
        (0x00080050, "SH", "2"),
        (0x00081030, "LO", "2"),
        (0x00200010, "SH", "1"),
    ),
    "SERIES": ((0x00080060, "CS", "1"), (0x00200011, "IS", "1")),
    "IMAGE": ((0x00200013, "IS", "1"),),
}
# Deflated Explicit VR LE and the two JPIP "Referenced Deflate" syntaxes: the whole dataset is one
# zlib stream, so there is no pixel data at a file offset to copy.
# A source file up to this size is read in one call and de-identified from memory (the pixel copy's
# chunk size: the memory bound of the streamed path).
WHOLE_READ_SIZE = 1024 * 1024
DEFLATED_SYNTAXES = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"})


@dataclass
class DeidReport:
    """What the engine did to one dataset. JSON-safe via :meth:`to_dict`; never holds patient data."""

    actions: dict[str, int] = field(default_factory=dict)
    removed_private: int = 0
    kept_private: int = 0
    options: list[str] = field(default_factory=list)
    profile: str = ""
    method_codes: list[str] = field(default_factory=list)
    date_shift_days: int | None = None
    longitudinal_temporal_information: str = "REMOVED"
    new_study_instance_uid: str | None = None
    new_series_instance_uid: str | None = None
    new_sop_instance_uid: str | None = None
    pixel_text: dict | None = None

    def to_dict(self) -> dict:
        """A plain dict of counts, option names, codes and the new (keyed) UIDs."""
        return {
            "actions": dict(sorted(self.actions.items())),
            "removed_private": self.removed_private,
            "kept_private": self.kept_private,
            "options": list(self.options),
            "profile": self.profile,
            "method_codes": list(self.method_codes),
            "date_shift_days": self.date_shift_days,
            "longitudinal_temporal_information": self.longitudinal_temporal_information,
            "new_study_instance_uid": self.new_study_instance_uid,
            "new_series_instance_uid": self.new_series_instance_uid,
            "new_sop_instance_uid": self.new_sop_instance_uid,
            "pixel_text": self.pixel_text,
        }


def _shift_date(value: str, days: int) -> str:
    """Move a DICOM date YYYYMMDD (or a DT's YYYY or YYYYMM prefix) ``days`` back.

    A partial value moves by whole units of its own precision, at least one, so it never stays as it
    was: a year by round(days / 365.25) years, a month by round(days / 30.44) months. Intervals keep
    as much as that precision can hold. "" when the value cannot be read, so no original survives.
    """
    digits = value[:8]
    try:
        if len(digits) == 8:
            return (
                dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8])) - dt.timedelta(days)
            ).strftime("%Y%m%d")
        if len(digits) == 4 and digits.isdigit():
            return f"{int(digits) - max(1, round(days / 365.25)):04d}"
        if len(digits) == 6 and digits.isdigit():
            months = int(digits[:4]) * 12 + int(digits[4:6]) - 1 - max(1, round(days / 30.44))
            if not 1 <= int(digits[4:6]) <= 12:
                return ""
            return f"{months // 12:04d}{months % 12 + 1:02d}"
    except ValueError:
        return ""
    return ""


def shift_date_value(value: str, vr: str, days: int) -> str:
    """Shift every date of a DA or DT value (multi-valued and ranges too) ``days`` back."""
    shifted_values = []
    for single in value.split("\\"):
        parts = []
        for part in single.split("-") if vr == "DA" else [single]:
            part = part.strip()
            if not part:
                parts.append("")
                continue
            if vr == "DA":
                parts.append(_shift_date(part, days))
            else:
                date_part = part[:8] if part[:8].isdigit() else part[:4]
                new_date = _shift_date(date_part, days)
                parts.append(new_date + part[len(date_part) :] if new_date else "")
        shifted_values.append("-".join(parts) if vr == "DA" else parts[0])
    return "\\".join(shifted_values)


class _Engine:
    """One de-identification of one dataset: the walk and its counters."""

    def __init__(
        self,
        *,
        rules: RuleSet,
        options: DeidOptions,
        key: bytes,
        fingerprint: Fingerprint,
        requirements: Requirements,
    ):
        self.rules = rules
        self.exact = rules.exact
        self.requirements = requirements
        # The tags of the sequences that lead to the dataset being walked (empty at the top level).
        self.path: list[int] = []
        self.options = options
        self.key = key
        self.identifiers = fingerprint.identifying_strings(rules)
        self.remap_uids = not options.retain_uids
        self.replaced_uids = fingerprint.replaced_uids(rules) if self.remap_uids else frozenset()
        self.shift_days: int | None = None
        if options.retain_modified_dates:
            self.shift_days = date_shift_days(key, fingerprint.patient_key or "")
        self.actions: Counter[str] = Counter()
        self.removed_private = 0
        self.kept_private = 0
        self.uid_cache: dict[str, str] = {}

    # -- values ----------------------------------------------------------------------------------

    def new_uid(self, uid: str) -> str:
        new = self.uid_cache.get(uid)
        if new is None:
            new = uid if is_well_known_uid(uid) else keyed_uid(self.key, uid)
            self.uid_cache[uid] = new
        return new

    def _remap_uid_element(self, ds: Dataset, tag: int, elem=None) -> None:
        strings = element_strings(ds, tag, "UI", elem)
        if len(strings) > 1:
            ds[tag] = new_element(tag, "UI", [self.new_uid(uid) for uid in strings])
        elif strings:
            ds[tag] = new_element(tag, "UI", self.new_uid(strings[0]))

    def _clean_text(self, ds: Dataset, tag: int, vr: str, elem=None) -> bool:
        # Keep the text, minus every identifying string of this dataset. True if something was removed.
        if not self.identifiers and not self.replaced_uids:
            return False
        strings = element_strings(ds, tag, vr, elem)
        if not strings:
            return False
        text = "\\".join(strings)
        if self.replaced_uids:
            # An original UID quoted in text ("prior: 1.2.3...") is the keyed UID there as well.
            originals = [uid for uid in uids_in_text(text) if uid in self.replaced_uids]
            for uid in originals:
                text = text.replace(uid, self.new_uid(uid))
            if originals:
                ds[tag] = new_element(tag, vr, text)
                if find_identifier(text, self.identifiers) is None:
                    return True
        if find_identifier(text, self.identifiers) is None:
            return False
        cleaned = remove_identifiers(text, self.identifiers).strip()
        if cleaned:
            ds[tag] = new_element(tag, vr, cleaned)
        else:
            # Nothing but identifying text: the VR's dummy, since an empty value may be invalid where
            # the attribute is required (an SR's Text Value).
            self._dummy(ds, tag, vr)
        return True

    def _shift_dates(self, ds: Dataset, tag: int, vr: str) -> None:
        strings = element_strings(ds, tag, vr)
        if strings:
            ds[tag] = new_element(tag, vr, shift_date_value("\\".join(strings), vr, self.shift_days or 0))

    def _dummy(self, ds: Dataset, tag: int, vr: str) -> None:
        if tag in (PATIENT_ID, PATIENT_NAME):
            self._pseudonym(ds, tag, vr)
        elif vr == "SQ":
            self._dummy_sequence(ds, tag)
        elif vr == "UI":
            strings = element_strings(ds, tag, vr)
            value = [self.new_uid(uid) for uid in strings] if strings else keyed_uid(self.key, "dummy")
            ds[tag] = new_element(tag, "UI", value)
        elif vr in DUMMY_VALUES:
            ds[tag] = new_element(tag, vr, DUMMY_VALUES[vr])
        else:
            ds[tag] = new_element(tag, vr if vr != "OB or OW" else "OB", BINARY_DUMMY)

    def _dummy_sequence(self, ds: Dataset, tag: int) -> None:
        """D on a sequence: it must stay, with items its IOD accepts.

        Where the IOD table says what an item holds, each original item keeps its Type 1 contents as
        dummies (UIDs replaced by their keyed UIDs, sequences reduced the same way), its Type 2
        contents emptied, and loses everything else. Otherwise one empty item.
        """
        path = (*self.path, tag)
        items = ds[tag].value or ()
        if not items or not self.requirements.has_contents(path):
            ds[tag] = new_element(tag, "SQ", Sequence([Dataset()]))
            return
        for item in items:
            self._reduce_item(item, path)

    def _reduce_item(self, item: Dataset, path: tuple[int, ...]) -> None:
        for tag in list(item.keys()):
            kind = self.requirements.type_of(path, tag) if not (tag >> 16) & 1 else None
            if kind not in ("1", "1C", "2", "2C"):
                del item[tag]
                continue
            vr = element_vr(item.get_item(tag))
            if vr == "SQ":
                if kind in ("2", "2C"):
                    item[tag] = new_element(tag, "SQ", Sequence())
                else:
                    for sub in item[tag].value or ():
                        self._reduce_item(sub, (*path, tag))
            elif kind in ("1", "1C"):
                if vr not in KEPT_IN_REDUCED_ITEMS and tag not in CODE_VALUE_TAGS:
                    # Coded values stay: a dummy is no member of the value set the IOD defines
                    # (Value Type ANONYMIZED), and they are vocabulary, not patient data.
                    self._dummy(item, tag, vr)
            else:
                self._zero(item, tag, vr)

    def _pseudonym(self, ds: Dataset, tag: int, vr: str) -> None:
        strings = element_strings(ds, tag, vr)
        original = "\\".join(strings)
        if tag == PATIENT_ID:
            value = pseudonym_id(self.key, original) if original else ""
        else:
            value = pseudonym_name(self.key, original) if original else ""
        ds[tag] = new_element(tag, vr, value)

    def _zero(self, ds: Dataset, tag: int, vr: str) -> None:
        if tag in (PATIENT_ID, PATIENT_NAME):
            # Z allows a dummy: a keyed pseudonym lets a research site link one patient's studies.
            self._pseudonym(ds, tag, vr)
        elif vr == "SQ":
            ds[tag] = new_element(tag, "SQ", Sequence())
        elif vr in STRING_VRS:
            ds[tag] = new_element(tag, vr, "")
        elif vr in DUMMY_VALUES:
            ds[tag] = new_element(tag, vr, None)
        else:
            ds[tag] = new_element(tag, vr if vr != "OB or OW" else "OB", b"")

    # -- the walk --------------------------------------------------------------------------------

    def walk(self, ds: Dataset) -> None:
        """Apply the resolved rules to every element of ``ds`` and, recursively, of its items."""
        rules, requirements = self.rules, self.requirements
        path = tuple(self.path)
        table = requirements.actions(rules, path)
        resolve = requirements.action
        private_tags = []
        removed: list[int] = []
        overlay_groups: set[int] = set()
        for tag, elem in streaming.elements_of(ds):
            group = tag >> 16
            if group & 1:
                private_tags.append(tag)
                continue
            if not tag & 0xFFFF:
                # Group lengths are retired and would be wrong after this walk.
                removed.append(tag)
                continue
            action = table.get(tag, MISSING)
            if action is MISSING:
                action = resolve(rules, path, tag, table)
            if action is None or action == KEEP:
                self._keep(ds, tag, action, elem)
                continue
            self.actions[CLEAN if action == SHIFT else action] += 1
            if action == REMOVE:
                removed.append(tag)
                if 0x6000 <= group <= 0x60FF and tag & 0xFFFF == 0x3000:
                    overlay_groups.add(group)
                continue
            vr = element_vr(loaded(ds, tag, elem))
            if action == ZERO:
                self._zero(ds, tag, vr)
            elif action == DUMMY:
                self._dummy(ds, tag, vr)
            elif action == UID:
                if vr == "SQ":
                    self._walk_items(ds, tag)
                elif vr == "UI":
                    self._remap_uid_element(ds, tag)
                else:
                    self._dummy(ds, tag, vr)
            elif action == SHIFT:
                if vr in DATE_VRS:
                    self._shift_dates(ds, tag, vr)
                elif vr == "SQ":
                    self._walk_items(ds, tag)
                elif vr == "TM":
                    pass  # whole-day shifts leave times of day unchanged
                elif vr in TEXT_VRS:
                    self._clean_text(ds, tag, vr)
                else:
                    self._dummy(ds, tag, vr)  # e.g. a binary timestamp cannot be shifted in place
            elif action == CLEAN:
                if vr == "SQ":
                    self._walk_items(ds, tag)
                elif vr in DATE_VRS and self.shift_days is not None:
                    self._shift_dates(ds, tag, vr)
                elif vr in STRING_VRS and vr != "UI":
                    self._clean_text(ds, tag, vr)
        # Removed together: no handler above reads another element of this dataset.
        streaming.remove_elements(ds, removed)
        if overlay_groups:
            # Overlay Data removed: the rest of its Overlay Plane (rows, columns, type, origin...)
            # would be an invalid module without it. The whole group goes.
            for tag in [tag for tag in list(ds.keys()) if tag >> 16 in overlay_groups]:
                del ds[tag]
                self.actions[REMOVE] += 1
        if private_tags:
            self._private(ds, private_tags)

    def _keep(self, ds: Dataset, tag: int, action: str | None, elem) -> None:
        # Unlisted public attributes and K: kept, but sequences are de-identified inside, text is
        # cleaned of identifying strings, instance UIDs are remapped and dates shifted as asked.
        elem = loaded(ds, tag, elem)
        vr = element_vr(elem)
        if action == KEEP:
            self.actions[KEEP] += 1
        if vr == "SQ":
            self._walk_items(ds, tag)
        elif vr == "PN" and action is None:
            # A person's name identifies someone wherever it stands, listed in Table E.1-1 or not
            # (e.g. Secondary Reviewer Name, or a name after the pixel data): replaced, not cleaned.
            self.actions[DUMMY] += 1
            self._dummy(ds, tag, vr)
        elif vr in TEXT_VRS and tag not in CODE_VALUE_TAGS:
            if self._clean_text(ds, tag, vr, elem):
                self.actions[CLEAN] += 1
        elif vr == "UI":
            if action is None and self.remap_uids and is_instance_uid_tag(tag):
                self._remap_uid_element(ds, tag, elem)
        elif vr in DATE_VRS and self.shift_days is not None:
            self._shift_dates(ds, tag, vr)
        elif (
            vr in BINARY_VRS
            and action is None
            and tag >> 16 != 0x7FE0
            and binary_holds_identifier(ds[tag].value, self.identifiers)
        ):
            # An unlisted public binary value (an HPGL or other document, an icon's metadata) that
            # holds an identifying value as text: removed, since bytes cannot be cleaned.
            del ds[tag]
            self.actions[REMOVE] += 1

    def _walk_items(self, ds: Dataset, tag: int) -> None:
        self.path.append(tag)
        try:
            for item in ds[tag].value or ():
                self.walk(item)
        finally:
            self.path.pop()

    def _private(self, ds: Dataset, private_tags: list[int]) -> None:
        kept_blocks: set[tuple[int, int]] = set()
        creators: dict[tuple[int, int], str] = {}
        if self.rules.safe_private:
            for tag in private_tags:
                element = tag & 0xFFFF
                if 0x0010 <= element <= 0x00FF:
                    strings = element_strings(ds, tag, "LO")
                    if strings:
                        creators[(tag >> 16, element)] = strings[0]
            for tag in private_tags:
                element = tag & 0xFFFF
                if element < 0x1000:
                    continue
                group, block = tag >> 16, element >> 8
                creator = creators.get((group, block))
                if creator is None or not self.rules.is_safe_private(group, creator, element & 0xFF):
                    continue
                kept_blocks.add((group, block))
                self.kept_private += 1
                self.actions[self.rules.private_action] += 1
                vr = element_vr(ds.get_item(tag))
                if vr == "SQ":
                    self._walk_items(ds, tag)
                elif vr in TEXT_VRS:
                    self._clean_text(ds, tag, vr)
        removed = []
        for tag in private_tags:
            element = tag & 0xFFFF
            if kept_blocks:
                group = tag >> 16
                if element >= 0x1000 and (group, element >> 8) in kept_blocks:
                    if self.rules.is_safe_private(
                        group, creators.get((group, element >> 8), ""), element & 0xFF
                    ):
                        continue
                elif 0x0010 <= element <= 0x00FF and (group, element) in kept_blocks:
                    continue
            removed.append(tag)
        streaming.remove_elements(ds, removed)
        self.removed_private += len(removed)


def _method_codes(options: DeidOptions) -> list[tuple[str, str]]:
    codes = [BASIC_PROFILE_CODE]
    codes.extend(
        (OPTION_CODES[name][1], OPTION_CODES[name][2]) for name in options.to_names() if name in OPTION_CODES
    )
    return codes


def _refuse_burned_in(ds: Dataset, options: DeidOptions) -> None:
    if BURNED_IN_ANNOTATION not in ds or options.accept_burned_in_annotation or options.clean_pixel_data:
        return
    strings = element_strings(ds, BURNED_IN_ANNOTATION, "CS")
    if strings and strings[0].upper() == "YES":
        raise DeidentificationRefusedError(
            "(0028,0301) BurnedInAnnotation is YES: the pixel data may show identifying text; resend "
            "with clean_pixel_data to blank it, or with accept_burned_in_annotation to keep the pixels "
            "as they are (Patient Identity Removed is then NO)"
        )


def deidentify_dataset(
    ds: Dataset,
    *,
    options: DeidOptions,
    key: bytes,
    pixel_outcome: pixel_policy.PixelOutcome | None = None,
) -> DeidReport:
    """De-identify ``ds`` in place (its file meta too) under the Basic Profile and ``options``.

    Takes a fingerprint of the original first, applies every rule of PS3.15 Table E.1-1 at any depth,
    writes the de-identification attributes, then runs the independent verification pass against the
    fingerprint.

    Pixel data held in ``ds`` is scanned for burned-in text and, under ``clean_pixel_data``, cleaned
    (see :mod:`.pixels`). A caller that scanned the pixels itself (the streaming path of
    :func:`deidentify_file`, whose ``ds`` is the header only) passes ``pixel_outcome``.

    Raises DeidentificationRefusedError for burned-in annotation (declared YES, or text found)
    without ``clean_pixel_data`` or ``accept_burned_in_annotation`` (``ds`` untouched) and
    DeidentificationVerificationError when the output still holds something identifying, in its
    attributes or its cleaned pixels (``ds`` is then partly de-identified and must not be released).
    An empty ``key`` is refused with ``ValueError``.
    """
    if not key:
        raise ValueError("a non-empty de-identification key is required")
    _refuse_burned_in(ds, options)
    if pixel_outcome is None:
        pixel_outcome = pixel_policy.inspect(ds, pixel_element_in(ds), None, options=options)
        if options.clean_pixel_data and pixel_outcome.needs_cleaning:
            pixel_policy.clean(ds, pixel_outcome)
    rules = ruleset_for(options)
    fingerprint = collect_identifiers(ds)
    requirements = requirements_for(ds)
    engine = _Engine(
        rules=rules, options=options, key=key, fingerprint=fingerprint, requirements=requirements
    )
    engine.walk(ds)

    _complete_directory_records(ds, engine)

    codes = _method_codes(options)
    # PS3.3 C.12.1.1.7.1: YES only when identity is removed from the attributes *and* the pixel data,
    # which accept_burned_in_annotation leaves as they are.
    pixels_kept = options.accept_burned_in_annotation and pixel_outcome.has_pixel_data
    ds[PATIENT_IDENTITY_REMOVED] = new_element(PATIENT_IDENTITY_REMOVED, "CS", "NO" if pixels_kept else "YES")
    if options.clean_pixel_data and pixel_outcome.scanned:
        ds[BURNED_IN_ANNOTATION] = new_element(BURNED_IN_ANNOTATION, "CS", "NO")
    method = [f"DICOMSVC PS3.15-{rules.edition} Basic Profile", *(meaning for _, meaning in codes[1:])]
    if options.accept_burned_in_annotation:
        method.append("Burned-in annotation not removed")
    # PS3.3 C.12.1.1.7: a file de-identified before keeps the record of that step; ours is added.
    earlier = element_strings(ds, DEIDENTIFICATION_METHOD, "LO") if DEIDENTIFICATION_METHOD in ds else []
    ds[DEIDENTIFICATION_METHOD] = new_element(DEIDENTIFICATION_METHOD, "LO", [*earlier, *method])
    code_items = (
        list(ds[DEIDENTIFICATION_METHOD_CODE_SEQUENCE].value or ())
        if (DEIDENTIFICATION_METHOD_CODE_SEQUENCE in ds)
        else []
    )
    for value, meaning in codes:
        item = Dataset()
        item[CODE_VALUE] = new_element(CODE_VALUE, "SH", value)
        item[CODING_SCHEME_DESIGNATOR] = new_element(CODING_SCHEME_DESIGNATOR, "SH", "DCM")
        item[CODE_MEANING] = new_element(CODE_MEANING, "LO", meaning)
        code_items.append(item)
    ds[DEIDENTIFICATION_METHOD_CODE_SEQUENCE] = new_element(
        DEIDENTIFICATION_METHOD_CODE_SEQUENCE, "SQ", Sequence(code_items)
    )
    if options.retain_full_dates:
        temporal = "UNMODIFIED"
    elif options.retain_modified_dates:
        temporal = "MODIFIED"
    else:
        temporal = "REMOVED"
    ds[LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED] = new_element(
        LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, "CS", temporal
    )

    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        _deidentify_file_meta(ds, file_meta, engine)

    verify_deidentified(ds, fingerprint, options=options, requirements=requirements)
    return DeidReport(
        actions=dict(engine.actions),
        removed_private=engine.removed_private,
        kept_private=engine.kept_private,
        options=options.to_names(),
        profile=f"PS3.15 {rules.edition} Basic Application Level Confidentiality Profile",
        method_codes=[value for value, _ in codes],
        date_shift_days=engine.shift_days,
        longitudinal_temporal_information=temporal,
        new_study_instance_uid=_uid_of(ds, STUDY_INSTANCE_UID),
        new_series_instance_uid=_uid_of(ds, SERIES_INSTANCE_UID),
        new_sop_instance_uid=_uid_of(ds, SOP_INSTANCE_UID),
        pixel_text=pixel_outcome.to_dict() if pixel_outcome.has_pixel_data else None,
    )


def _complete_directory_records(ds: Dataset, engine: _Engine) -> None:
    """Give every directory record of a DICOMDIR the keys its record type requires, after the walk."""
    if DIRECTORY_RECORD_SEQUENCE not in ds:
        return
    for record in ds[DIRECTORY_RECORD_SEQUENCE].value or ():
        strings = (
            element_strings(record, DIRECTORY_RECORD_TYPE, "CS") if DIRECTORY_RECORD_TYPE in record else []
        )
        for tag, vr, kind in DIRECTORY_RECORD_KEYS.get(strings[0].upper() if strings else "", ()):
            present = tag in record and element_strings(record, tag, vr)
            if kind == "1" and not present:
                engine._dummy(record, tag, vr)
            elif kind == "2" and tag not in record:
                record[tag] = new_element(tag, vr, "")


def _uid_of(ds: Dataset, tag: int) -> str | None:
    if tag not in ds:
        return None
    strings = element_strings(ds, tag, "UI")
    return strings[0] if strings else None


def _deidentify_file_meta(ds: Dataset, file_meta: Dataset, engine: _Engine) -> None:
    for tag in FILE_META_REMOVED:
        if tag in file_meta:
            del file_meta[tag]
    new_sop = _uid_of(ds, SOP_INSTANCE_UID)
    if new_sop is not None:
        file_meta[MEDIA_STORAGE_SOP_INSTANCE_UID] = new_element(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", new_sop)
    elif MEDIA_STORAGE_SOP_INSTANCE_UID in file_meta and engine.remap_uids:
        engine._remap_uid_element(file_meta, MEDIA_STORAGE_SOP_INSTANCE_UID)
    # A file meta without its SOP class or instance (as some writers leave it) is completed from the
    # dataset, as pydicom does; a dataset without them cannot be written as a valid DICOM file.
    sop_class = _uid_of(ds, SOP_CLASS_UID)
    if not (MEDIA_STORAGE_SOP_CLASS_UID in file_meta and _uid_of(file_meta, MEDIA_STORAGE_SOP_CLASS_UID)):
        if sop_class is None:
            raise InvalidDicomError(
                "the dataset has no SOP Class UID (0008,0016) and its file meta names none: it cannot "
                "be written as a DICOM file"
            )
        file_meta[MEDIA_STORAGE_SOP_CLASS_UID] = new_element(MEDIA_STORAGE_SOP_CLASS_UID, "UI", sop_class)
    if not (
        MEDIA_STORAGE_SOP_INSTANCE_UID in file_meta and _uid_of(file_meta, MEDIA_STORAGE_SOP_INSTANCE_UID)
    ):
        raise InvalidDicomError(
            "the dataset has no SOP Instance UID (0008,0018) and its file meta names none: it cannot "
            "be written as a DICOM file"
        )
    file_meta[IMPLEMENTATION_CLASS_UID] = new_element(
        IMPLEMENTATION_CLASS_UID, "UI", PROJECT_IMPLEMENTATION_CLASS_UID
    )
    file_meta[IMPLEMENTATION_VERSION_NAME] = new_element(
        IMPLEMENTATION_VERSION_NAME, "SH", PROJECT_IMPLEMENTATION_VERSION_NAME
    )


def deidentify_file(
    source: str | os.PathLike[str] | BinaryIO | object,
    destination: str | os.PathLike[str] | BinaryIO | object,
    *,
    options: DeidOptions,
    key: bytes,
) -> tuple[Dataset, DeidReport]:
    """Read a DICOM file, de-identify it and write it to ``destination``.

    ``source`` is a path or a seekable binary file object (read from its current position);
    ``destination`` a path or a binary file object. Only the header is read into memory: the pixel
    data element ((7FE0,0010), (7FE0,0008) or (7FE0,0009), native or encapsulated) is copied from
    ``source`` to ``destination`` byte for byte in 1 MiB chunks, never decoded. Elements after the pixel
    data are de-identified together with the header. A deflated transfer syntax (one zlib stream) and
    anything the pixel copy cannot handle exactly go through pydicom's whole-file read instead; the
    output is the same either way. The transfer syntax is kept; the output has a zeroed 128-byte
    preamble and ``DICM``.

    Returns the de-identified dataset (without its pixel data element when it was streamed) and the
    report. Raises OSError when ``source`` cannot be opened, InvalidDicomError when pydicom cannot
    read it as a DICOM file with file meta or its pixel data is cut short, plus whatever :func:`deidentify_dataset` raises (nothing is
    written then).
    """
    if isinstance(source, str | os.PathLike):
        # A source that cannot be opened is the caller's storage problem, not bad DICOM: OSError.
        with open(os.fspath(source), "rb") as fp:
            return _guarded(
                _deidentify_stream, _small_file_in_memory(fp), destination, options=options, key=key
            )
    if all(hasattr(source, name) for name in ("read", "seek", "tell")):
        return _guarded(_deidentify_stream, source, destination, options=options, key=key)
    return _guarded(_deidentify_in_memory, source, destination, options=options, key=key)


def _small_file_in_memory(fp: BinaryIO) -> BinaryIO:
    """A regular file of at most :data:`WHOLE_READ_SIZE` as one in-memory buffer, else ``fp`` itself.

    pydicom reads a header in many small reads and the pixel copy seeks back and forth: on a small
    file they cost more than the file. One read of the same bytes gives the same output; a larger
    file is streamed from disk as before, so memory stays bounded by this size.
    """
    try:
        status = os.fstat(fp.fileno())
        if not stat.S_ISREG(status.st_mode) or status.st_size > WHOLE_READ_SIZE:
            return fp
        data = fp.read(WHOLE_READ_SIZE + 1)
    except (OSError, AttributeError, io.UnsupportedOperation):
        fp.seek(0)
        return fp
    if len(data) > WHOLE_READ_SIZE:  # it grew since fstat: stream it
        fp.seek(0)
        return fp
    return io.BytesIO(data)


def _guarded(
    function, source, destination, *, options: DeidOptions, key: bytes
) -> tuple[Dataset, DeidReport]:
    """Run one de-identification; a file whose values pydicom cannot convert or write is bad input.

    Malformed values (an unknown VR, text that fits no character set, file meta pydicom refuses to
    write) surface as assorted library exceptions. They become InvalidDicomError naming only the
    exception's class: its message may quote the value. The same exception types raised by this
    project's own code are bugs, not bad input, and propagate as they are: a caller that retries
    failures (a job, a bulk run) tries again instead of refusing the file for good.
    """
    try:
        return function(source, destination, options=options, key=key)
    except (DicomServiceError, OSError):
        raise
    except (NotImplementedError, ValueError, TypeError, AttributeError, LookupError, UnicodeError) as error:
        # Where it failed (file and line), not the message: enough to tell a library refusal from a bug.
        frame = traceback.extract_tb(error.__traceback__)[-1]
        if _is_project_code(frame.filename):
            raise
        logger.warning(
            "de-identification refused a malformed file: %s at %s:%s",
            type(error).__name__,
            os.path.basename(frame.filename),
            frame.lineno,
        )
        raise InvalidDicomError(
            f"the file has values that cannot be read or written ({type(error).__name__})"
        ) from None


_PROJECT_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _is_project_code(filename: str) -> bool:
    """True when ``filename`` is a module of the dicom package (not pydicom, numpy or the stdlib)."""
    return os.path.abspath(filename).startswith(_PROJECT_PACKAGE + os.sep)


def _read(source: object, *, stop_before_pixels: bool) -> Dataset:
    try:
        ds = dcmread(source, force=False, stop_before_pixels=stop_before_pixels)
    except (PydicomInvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError) as exc:
        raise InvalidDicomError(f"not a readable DICOM file ({type(exc).__name__})") from None
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None or "TransferSyntaxUID" not in file_meta:
        raise InvalidDicomError("the file has no file meta information with a transfer syntax")
    return ds


def _deidentify_in_memory(
    source: object, destination: object, *, options: DeidOptions, key: bytes
) -> tuple[Dataset, DeidReport]:
    """The whole file, pixel data included, read into memory: for what cannot be streamed, and for
    pixel data that Clean Pixel Data rewrites."""
    ds = _read(source, stop_before_pixels=False)
    report = deidentify_dataset(ds, options=options, key=key)
    ds.preamble = b"\x00" * 128
    ds.save_as(destination, enforce_file_format=True)
    return ds, report


def _scan_streamed(
    fp: BinaryIO, ds: Dataset, options: DeidOptions
) -> tuple[pixel_policy.PixelOutcome | None, PixelElement | None]:
    """Scan the pixel data that follows the header just read; leave ``fp`` where it was.

    The outcome is None when what follows is not a pixel data element pydicom's decoders can be
    pointed at (the whole-file path then scans the dataset it reads).
    """
    _refuse_burned_in(ds, options)  # before the scan: a declared YES needs no decoding to refuse
    here = fp.tell()
    try:
        pixels = pixel_element_at(fp, ds)
        if pixels is None:
            if fp.seek(0, os.SEEK_END) - here >= 8:
                return None, None
            return pixel_policy.PixelOutcome(skipped="no pixel data", has_pixel_data=False), None
        return pixel_policy.inspect(ds, pixels, fp, options=options), pixels
    finally:
        fp.seek(here)


def _image_header(ds: Dataset) -> Dataset:
    """The attributes pydicom's decoders read (Image Pixel group and transfer syntax), deep-copied:
    setting an attribute that exists changes its element in place, and the header is about to change."""
    header = copy.deepcopy(ds.group_dataset(0x0028))
    header.file_meta = copy.deepcopy(ds.file_meta)
    return header


def _deidentify_stream(
    fp: BinaryIO, destination: object, *, options: DeidOptions, key: bytes
) -> tuple[Dataset, DeidReport]:
    try:
        start = fp.tell()
    except OSError:  # not seekable after all: pydicom reports what it cannot read
        return _deidentify_in_memory(fp, destination, options=options, key=key)
    ds = _read(fp, stop_before_pixels=True)
    syntax = str(ds.file_meta.TransferSyntaxUID).strip(" \0")
    implicit, little = ds.original_encoding
    run = None
    pixel_outcome = None
    try:
        if syntax in DEFLATED_SYNTAXES or implicit is None or little is None:
            raise streaming.NotStreamable("the dataset is deflated or its encoding is unknown")
        pixel_outcome, pixels = _scan_streamed(fp, ds, options)
        if pixel_outcome is None:
            raise streaming.NotStreamable("the pixel data could not be located")
        cleaning = options.clean_pixel_data and pixel_outcome.needs_cleaning
        if cleaning and not pixel_policy.streamable(ds):
            raise streaming.NotStreamable("bit-packed pixel data is cleaned in memory")
        if streaming.read_encoding_of(ds) not in (None, implicit):
            raise streaming.NotStreamable("the dataset is not encoded as its transfer syntax says")
        run = streaming.plan_pixel_copy(fp, implicit=implicit, little=little)
        if run is not None and run.source_size - run.end >= 8:
            tail = streaming.read_tail(
                fp, implicit=implicit, little=little, encoding=streaming.character_encoding(ds)
            )
            # The tail joins the header so that one fingerprint, one walk and one verification pass
            # see the whole dataset, exactly as after a whole-file read (a later duplicate wins there too).
            for tag, elem in tail.items():
                ds[tag] = elem
        if run is not None:
            first, last = run.tags[0], run.tags[-1]
            if any(first <= tag <= last for tag, _ in streaming.elements_of(ds)):
                raise streaming.NotStreamable("an element sorts into the pixel data run")
        if cleaning and (run is None or len(run.tags) != 1):
            raise streaming.NotStreamable("more than one pixel data element to clean")
    except streaming.NotStreamable:
        fp.seek(start)
        return _deidentify_in_memory(fp, destination, options=options, key=key)
    plan = source_image = None
    if cleaning:
        # Clean Pixel Data: the boxes are found and verified on the scanned frames first; then every
        # frame is decoded, blanked and written one at a time, in place of the byte copy.
        source_image = _image_header(ds)
        plan = pixel_policy.plan_cleaning(source_image, pixels, fp, pixel_outcome)
        pixel_policy.apply_plan_to_header(ds, plan)
    report = deidentify_dataset(ds, options=options, key=key, pixel_outcome=pixel_outcome)
    ds.preamble = b"\x00" * 128
    writer = streaming.Part10Writer(ds)
    owned = isinstance(destination, str | os.PathLike)
    out = open(os.fspath(destination), "wb") if owned else destination  # type: ignore[arg-type]  # noqa: SIM115
    try:
        if run is None:
            # No top-level pixel data: the header read was the whole dataset.
            writer.header(out)
        else:
            writer.header(out, below=run.tags[0])
            if plan is not None:
                pixel_policy.write_cleaned_pixels(out, source_image, pixels, fp, plan)
            else:
                streaming.copy_pixel_bytes(fp, out, run)
            writer.rest(out, above=run.tags[-1])
    except BaseException:
        if owned:
            out.close()
            os.unlink(destination)  # type: ignore[arg-type]
        raise
    if owned:
        out.close()
    return ds, report
