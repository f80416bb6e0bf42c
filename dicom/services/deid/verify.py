"""The verification pass: an independent check of de-identified output against the original's fingerprint.

It walks the output on its own (no code shared with the engine's walk) and refuses the output with
:class:`DeidentificationVerificationError` when:

- an attribute the profile removes (X, or a combination resolved to X) is present, at any depth;
- an attribute the profile empties or replaces (Z or D) still holds one of its original values;
- a Z sequence still has items;
- an original instance UID appears in any instance UID attribute, at any depth or in the file meta
  (unless Retain UIDs);
- a private attribute is present that Retain Safe Private does not keep (or any, without that option);
- an identifying string of the original (names and their components, IDs, dates, accession number,
  addresses, institution, ...) occurs as a whole word in any text value (SH, LO, ST, LT, UT, PN, UC),
  or (four characters or more, ASCII or UTF-16) in an unlisted public binary value;
- an original instance UID is quoted inside a text value.

The error's detail names the attribute by tag and keyword, never by value.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicom.services.errors import DeidentificationVerificationError

from .attributes import (
    BINARY_VRS,
    CODE_VALUE_TAGS,
    TEXT_VRS,
    binary_holds_identifier,
    describe,
    element_strings,
    element_vr,
    find_identifier,
    is_instance_uid_tag,
    loaded,
    uids_in_text,
)
from .fingerprint import Fingerprint
from .iod import MISSING, Requirements, requirements_for
from .options import DeidOptions
from .rules import DUMMY, REMOVE, ZERO, RuleSet, ruleset_for
from .streaming import elements_of

# Values the engine writes as dummies; an original that happened to equal one is not a leak.
NOT_IDENTIFYING_VALUES = frozenset(
    {"", "ANONYMOUS", "ANONYMIZED", "000Y", "19000101", "19000101000000", "000000", "0", "urn:anonymous"}
)
# Written by the engine itself from fixed vocabulary (profile and option names).
ENGINE_WRITTEN_TAGS = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})


class _Verifier:
    def __init__(
        self, fingerprint: Fingerprint, options: DeidOptions, rules: RuleSet, requirements: Requirements
    ) -> None:
        self.fingerprint = fingerprint
        self.rules = rules
        self.requirements = requirements
        self.path: list[int] = []
        self.identifiers = fingerprint.identifying_strings(rules)
        self.uids = frozenset() if options.retain_uids else fingerprint.replaced_uids(rules)
        self.retain_safe_private = options.retain_safe_private

    def fail(self, tag: int, reason: str) -> None:
        raise DeidentificationVerificationError(f"verification failed: {describe(tag)} {reason}")

    def check(self, ds: Dataset, *, top_level: bool) -> None:
        rules, requirements = self.rules, self.requirements
        path = tuple(self.path)
        table = requirements.actions(rules, path)
        private = []
        for tag, elem in elements_of(ds):
            if tag >> 16 & 1:
                private.append(tag)
                continue
            if top_level and tag in ENGINE_WRITTEN_TAGS:
                continue
            action = table.get(tag, MISSING)
            if action is MISSING:
                action = requirements.action(rules, path, tag, table)
            elem = loaded(ds, tag, elem)
            if action == REMOVE and not _is_empty(ds, tag):
                # Present but empty carries nothing: where something requires the attribute (a
                # DICOMDIR record's Type 2 key) the engine leaves it so.
                self.fail(tag, "is present although the profile removes it")
            vr = element_vr(elem)
            if vr == "SQ":
                items = ds[tag].value or ()
                if action == ZERO and len(items):
                    self.fail(tag, "still has items although the profile empties it")
                self.path.append(tag)
                for item in items:
                    self.check(item, top_level=False)
                self.path.pop()
                continue
            self.check_value(ds, tag, vr, action, elem)
        if private:
            self.check_private(ds, private)

    def check_value(self, ds: Dataset, tag: int, vr: str, action: str | None, elem=None) -> None:
        if vr == "UI":
            # Class, syntax and scheme UIDs are kept by design even where an invalid original reused
            # the same string as an instance UID; only instance UID attributes must be remapped.
            if (
                self.uids
                and is_instance_uid_tag(tag)
                and any(uid in self.uids for uid in element_strings(ds, tag, vr, elem))
            ):
                self.fail(tag, "still holds an original UID")
            return
        if action in (ZERO, DUMMY):
            originals = self.fingerprint.blanked_values(tag)
            if originals:
                for value in element_strings(ds, tag, vr, elem):
                    if value in originals and value not in NOT_IDENTIFYING_VALUES:
                        self.fail(tag, "still holds its original value")
            return
        if vr in BINARY_VRS and action is None and tag >> 16 != 0x7FE0:
            if binary_holds_identifier(ds[tag].value, self.identifiers):
                self.fail(tag, "holds an identifying value of the original in its binary value")
            return
        if vr in TEXT_VRS and tag not in CODE_VALUE_TAGS and (self.uids or self.identifiers):
            strings = element_strings(ds, tag, vr, elem)
            if not strings:
                return
            text = "\\".join(strings)
            if self.uids and any(uid in self.uids for uid in uids_in_text(text)):
                self.fail(tag, "quotes an original UID in its text")
            if self.identifiers and find_identifier(text, self.identifiers) is not None:
                self.fail(tag, "contains an identifying value of the original")

    def check_private(self, ds: Dataset, private: list[int]) -> None:
        if not self.retain_safe_private:
            self.fail(private[0], "is a private attribute and Retain Safe Private is off")
        creators: dict[tuple[int, int], str] = {}
        for tag in private:
            element = tag & 0xFFFF
            if 0x0010 <= element <= 0x00FF:
                strings = element_strings(ds, tag, "LO")
                creators[(tag >> 16, element)] = strings[0] if strings else ""
        used_blocks = set()
        for tag in private:
            element = tag & 0xFFFF
            if 0x0010 <= element <= 0x00FF:
                continue
            group = tag >> 16
            creator = creators.get((group, element >> 8))
            if (
                element < 0x1000
                or creator is None
                or not self.rules.is_safe_private(group, creator, element & 0xFF)
            ):
                self.fail(tag, "is a private attribute not listed as safe")
            used_blocks.add((group, element >> 8))
            vr = element_vr(ds.get_item(tag))
            if vr == "SQ":
                for item in ds[tag].value or ():
                    self.check(item, top_level=False)
            else:
                self.check_value(ds, tag, vr, None)
        for group, block in creators:
            if (group, block) not in used_blocks:
                self.fail((group << 16) | block, "is a private creator without retained attributes")


def _is_empty(ds: Dataset, tag: int) -> bool:
    """An empty value (not a sequence: an empty one still says the profile kept the attribute)."""
    element = ds[tag]
    if element.VR == "SQ":
        return False
    value = element.value
    return value is None or (isinstance(value, str | bytes) and len(value) == 0)


def verify_deidentified(
    ds: Dataset, fingerprint: Fingerprint, *, options: DeidOptions, requirements: Requirements | None = None
) -> None:
    """Check de-identified ``ds`` (and its file meta) against the original's ``fingerprint``.

    Raises DeidentificationVerificationError naming the first offending attribute (tag and keyword
    only). Reads the dataset; changes nothing.
    """
    verifier = _Verifier(
        fingerprint,
        options,
        ruleset_for(options),
        requirements if requirements is not None else requirements_for(ds),
    )
    verifier.check(ds, top_level=True)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and verifier.uids:
        for tag, elem in elements_of(file_meta):
            elem = loaded(file_meta, tag, elem)
            if (
                element_vr(elem) == "UI"
                and is_instance_uid_tag(tag)
                and any(uid in verifier.uids for uid in element_strings(file_meta, tag, "UI", elem))
            ):
                verifier.fail(tag, "still holds an original UID")
