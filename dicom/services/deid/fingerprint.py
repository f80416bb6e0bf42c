"""What identified the patient in a dataset, taken before de-identification.

:func:`collect_identifiers` walks the original dataset on its own (it shares no code with the
engine's walk) and records the identifying strings, the original values of attributes the profile
blanks or replaces, and every instance UID. The engine uses the identifying strings to clean text;
the verification pass checks the output against all of it. The fingerprint holds patient data: it
lives only in memory for the duration of one de-identification and is never logged or returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.dataset import Dataset

from .attributes import (
    BINARY_VRS,
    DATE_VRS,
    IDENTIFYING_TAGS,
    element_strings,
    element_vr,
    identifier_strings,
    is_instance_uid_tag,
    is_well_known_uid,
    loaded,
)
from .rules import KEEP, RuleSet, load_rules
from .streaming import elements_of

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
STUDY_INSTANCE_UID = 0x0020000D


@lru_cache(maxsize=1)
def _tags_that_may_be_blanked() -> frozenset[int]:
    # Every exact row whose Basic Profile action can end in Z or D: their original values are kept
    # so the verification pass can tell a dummy from the original.
    return frozenset(
        tag for tag, basic, _required, _options in load_rules()["exact"] if "Z" in basic or "D" in basic
    )


@dataclass
class Fingerprint:
    """Identifying facts about one original dataset (in memory only; never logged)."""

    identifiers: dict[str, set[int]] = field(default_factory=dict)
    original_values: dict[int, set[str]] = field(default_factory=dict)
    uids: dict[str, set[int]] = field(default_factory=dict)
    patient_id: str | None = None
    patient_name: str | None = None
    study_instance_uid: str | None = None

    @property
    def patient_key(self) -> str | None:
        """What identifies the patient for the date offset: Patient ID, else name, else the study."""
        return self.patient_id or self.patient_name or self.study_instance_uid

    def identifying_strings(self, rules: RuleSet) -> tuple[str, ...]:
        """The lower-cased strings that must not survive, longest first.

        A string counts only if at least one attribute it came from is not kept by the profile under
        these options (e.g. with Retain Institution Identity the institution name is not one).
        """
        active = []
        for ident, sources in self.identifiers.items():
            for tag in sources:
                action = rules.action_for(tag)
                if action is not None and action != KEEP:
                    active.append(ident)
                    break
        active.sort(key=lambda ident: (-len(ident), ident))
        return tuple(active)

    def replaced_uids(self, rules: RuleSet) -> frozenset[str]:
        """Original UIDs that must not survive: those from any attribute the profile does not keep."""
        return frozenset(
            uid for uid, sources in self.uids.items() if any(rules.action_for(tag) != KEEP for tag in sources)
        )

    def blanked_values(self, tag: int) -> set[str]:
        """Original values of an attribute the profile empties or replaces (Z or D)."""
        return self.original_values.get(tag, set())


def collect_identifiers(ds: Dataset) -> Fingerprint:
    """Fingerprint ``ds`` (and its file meta) before de-identification; ``ds`` is not modified.

    Elements read here are converted from their raw form by pydicom, which the engine then reuses.
    """
    fingerprint = Fingerprint()
    blanked = _tags_that_may_be_blanked()
    _collect(ds, fingerprint, blanked)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        _collect(file_meta, fingerprint, blanked)
    fingerprint.patient_id = _first_string(ds, PATIENT_ID)
    fingerprint.patient_name = _first_string(ds, PATIENT_NAME)
    fingerprint.study_instance_uid = _first_string(ds, STUDY_INSTANCE_UID)
    return fingerprint


def _first_string(ds: Dataset, tag: int) -> str | None:
    if tag not in ds:
        return None
    values = element_strings(ds, tag, element_vr(ds.get_item(tag)))
    return values[0] if values else None


def _collect(ds: Dataset, fingerprint: Fingerprint, blanked: frozenset[int]) -> None:
    for tag, elem in elements_of(ds):
        if tag >> 16 & 1:
            continue  # private: removed or, if safe, not identifying by the standard's judgement
        elem = loaded(ds, tag, elem)
        vr = element_vr(elem)
        if vr == "SQ":
            for item in ds[tag].value or ():
                _collect(item, fingerprint, blanked)
            continue
        if vr in BINARY_VRS:
            continue
        wanted_uid = vr == "UI" and is_instance_uid_tag(tag)
        wanted = wanted_uid or vr == "PN" or vr in DATE_VRS or tag in IDENTIFYING_TAGS or tag in blanked
        if not wanted:
            continue
        strings = element_strings(ds, tag, vr, elem)
        if not strings:
            continue
        if wanted_uid:
            for uid in strings:
                if not is_well_known_uid(uid):
                    fingerprint.uids.setdefault(uid, set()).add(tag)
            continue
        if tag in blanked:
            fingerprint.original_values.setdefault(tag, set()).update(strings)
        if vr == "PN" or vr in DATE_VRS or tag in IDENTIFYING_TAGS:
            for string in strings:
                for ident in identifier_strings(string, vr):
                    fingerprint.identifiers.setdefault(ident, set()).add(tag)
