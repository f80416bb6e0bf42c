"""The de-identification options of PS3.15 Annex E, chosen per request.

The field names are the project's public vocabulary: the API, the admin form and the management
commands expose them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

OPTION_NAMES: tuple[str, ...] = (
    "retain_full_dates",
    "retain_modified_dates",
    "retain_patient_characteristics",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_uids",
    "retain_safe_private",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
    "clean_pixel_data",
    "accept_burned_in_annotation",
)

# Option name -> (column of Table E.1-1, CID 7050 code, code meaning). Clean Pixel Data has no column:
# it acts on the pixels, not on attributes. accept_burned_in_annotation is not an option of the
# standard: it only lets through files the standard would have us clean first.
OPTION_CODES: dict[str, tuple[str, str, str]] = {
    "retain_full_dates": (
        "rtnLongFullDatesOpt",
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain_modified_dates": (
        "rtnLongModifDatesOpt",
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("rtnPatCharsOpt", "113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("rtnDevIdOpt", "113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("rtnInstIdOpt", "113112", "Retain Institution Identity Option"),
    "retain_uids": ("rtnUIDsOpt", "113110", "Retain UIDs Option"),
    "retain_safe_private": ("rtnSafePrivOpt", "113111", "Retain Safe Private Option"),
    "clean_descriptors": ("cleanDescOpt", "113105", "Clean Descriptors Option"),
    "clean_structured_content": ("cleanStructContOpt", "113104", "Clean Structured Content Option"),
    "clean_graphics": ("cleanGraphOpt", "113103", "Clean Graphics Option"),
    "clean_pixel_data": ("", "113101", "Clean Pixel Data Option"),
}
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
# Pairs of options of which at most one may be on.
ALTERNATIVES: tuple[tuple[str, str], ...] = (
    ("retain_full_dates", "retain_modified_dates"),
    ("clean_pixel_data", "accept_burned_in_annotation"),
)


@dataclass(frozen=True)
class DeidOptions:
    """Which PS3.15 options apply on top of the Basic Profile; all off by default.

    Construction raises ``ValueError`` when both ways of retaining dates are asked for, since the
    standard makes them alternatives, and when ``clean_pixel_data`` (blank burned-in text) and
    ``accept_burned_in_annotation`` (leave the pixels as they are) are both asked for.
    """

    retain_full_dates: bool = False
    retain_modified_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    clean_pixel_data: bool = False
    accept_burned_in_annotation: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` if the combination is not allowed."""
        for field in fields(self):
            if not isinstance(getattr(self, field.name), bool):
                raise ValueError(f"option {field.name} must be a boolean")
        if self.retain_full_dates and self.retain_modified_dates:
            raise ValueError(
                "retain_full_dates and retain_modified_dates are alternatives: choose at most one"
            )
        if self.clean_pixel_data and self.accept_burned_in_annotation:
            raise ValueError(
                "clean_pixel_data and accept_burned_in_annotation are alternatives: choose at most one"
            )

    @classmethod
    def from_names(cls, names: Iterable[str]) -> DeidOptions:
        """Options with exactly the named ones switched on; ``ValueError`` names an unknown one."""
        chosen = set()
        for name in names:
            if name not in OPTION_NAMES:
                raise ValueError(f"unknown de-identification option: {name!r}")
            chosen.add(name)
        return cls(**dict.fromkeys(chosen, True))

    @classmethod
    def with_overrides(cls, defaults: Iterable[str], overrides: Mapping[str, bool]) -> DeidOptions:
        """The ``defaults`` (``DICOM_DEID_DEFAULT_OPTIONS``) changed by what a request or command says.

        An option the request turns on drops a default it is an alternative to (a request for
        ``accept_burned_in_annotation`` where ``clean_pixel_data`` is a default), unless the request
        also names that one. ``ValueError`` as :meth:`from_names`, or for two alternatives asked for.
        """
        chosen = set(defaults)
        for name, value in overrides.items():
            if not value:
                chosen.discard(name)
                continue
            chosen.add(name)
            for pair in ALTERNATIVES:
                if name in pair:
                    other = pair[1] if name == pair[0] else pair[0]
                    if other not in overrides:
                        chosen.discard(other)
        return cls.from_names(sorted(chosen))

    def to_names(self) -> list[str]:
        """The names of the options switched on, in ``OPTION_NAMES`` order."""
        return [name for name in OPTION_NAMES if getattr(self, name)]

    def table_columns(self) -> frozenset[str]:
        """The Table E.1-1 option columns these options activate."""
        return frozenset(
            OPTION_CODES[name][0]
            for name in self.to_names()
            if name in OPTION_CODES and OPTION_CODES[name][0]
        )
