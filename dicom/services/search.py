"""Searching stored instances by their attributes: for QIDO-RS (dicomweb.qido) and the DIMSE C-FIND SCP (dimse.find).

The search index is the typed columns of :class:`~dicom.models.DicomFile` (filled by
``apply_header`` through :func:`index_columns`); a result's other attributes come from the matched
row's metadata object. Matching follows PS3.4 C.2.2.2, on each instance row, all keys together (a
key of an upper level applies at the levels below it: relational queries):

- single value matching: exact; person names (PN) case-insensitively;
- wildcard matching (``*`` any run of characters, ``?`` one) on text and names, not on UIDs,
  dates, times or numbers;
- UID list matching: UIDs separated by commas or backslashes;
- range matching of dates and times, bounds included: ``a-b``, ``-b``, ``a-``. A time stands for
  the whole unit it names: ``10`` is 10:00:00 to 10:59:59.999999, also as a single value. Dates
  and times match independently (no combined date-time matching);
- an empty value is universal matching: every entity, with that attribute returned;
- ``ModalitiesInStudy``: one or more modalities (list); a study matches when any of its instances
  has one of them.

Access: the caller hands over the files the user may see (``dicomweb.selectors.stored_files``);
counts and computed attributes (``ModalitiesInStudy``, ``NumberOf...``) are computed from those
only. For a user who may not see originals' patient data (``dicom.access.may_see_patient_data``),
identifying attributes (:data:`IDENTIFYING`) are returned empty for originals and a key on one of
them matches only de-identified files: a query never tells them anything about an original's real
values. A result's attributes are read from one matching row of the entity (the newest; for that
user, a de-identified one first), so they always come from a file the user may see, and in full
whenever there is one.

Results come in UID order (study, series, instance): stable pages, and an order that tells nothing
about patient data. (The database's collation orders them when no key is matched on, Python's code
point order otherwise: each query's pages are consistent, two different queries may order differently.) One entity per UID: a SOP Instance UID stored more than once is one instance.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connections
from django.db.models import Count, F, Q, QuerySet, Window
from django.db.models.functions import RowNumber, Upper
from django.db.models.lookups import Exact, StartsWith
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from dicom import access
from dicom.models import DicomFile
from dicom.services.errors import DicomServiceError
from dicom.services.metadata import INDEX_ONLY_KEYWORDS

PATIENT, STUDY, SERIES, INSTANCE = "patient", "study", "series", "instance"
LEVELS = (STUDY, SERIES, INSTANCE)
# PATIENT is above the levels of QIDO-RS, for C-FIND Patient Root: its attributes apply below it too.
DEPTH = {PATIENT: -1, **{level: depth for depth, level in enumerate(LEVELS)}}
# The columns that name an entity of each level (an instance is named by all three).
_KEY_COLUMNS = {
    PATIENT: ("patient_id",),
    STUDY: ("study_instance_uid",),
    SERIES: ("study_instance_uid", "series_instance_uid"),
    INSTANCE: ("study_instance_uid", "series_instance_uid", "sop_instance_uid"),
}

# How a matching key matches (None: a return key only).
UID, TEXT, NAME, DATE, TIME, NUMBER, MODALITIES = (
    "uid",
    "text",
    "name",
    "date",
    "time",
    "number",
    "modalities",
)
# Where a value is read: a DicomFile column, the row's metadata object, or computed per entity.
COLUMN, METADATA, COMPUTED = "column", "metadata", "computed"

MAX_TEXT = 64  # SH, LO and CS values are at most 64 characters (PS3.5 6.2)
MAX_NAME = 324  # five PN components of 64 characters and their separators
MAX_UIDS = 1000
MAX_STARS = 8


class SearchQueryError(DicomServiceError):
    """A query the service cannot answer as asked (an unknown key, a malformed value).

    The detail names the attribute, never the value the client sent (it may be patient data).
    """


@dataclass(frozen=True)
class Attribute:
    """One attribute a search can match on or return, at the level it belongs to."""

    keyword: str
    level: str
    key: str  # the DicomFile column or metadata key it is read from
    source: str = COLUMN
    match: str | None = None
    default: bool = True  # returned without being asked for (PS3.18 Tables 10.6.3-3 to -5)

    @property
    def identifying(self) -> bool:
        return self.key in IDENTIFYING


# Patient data: the access rule's keys plus the index-only values that identify a patient or their care.
IDENTIFYING = frozenset(access.PATIENT_DATA_KEYS | set(INDEX_ONLY_KEYWORDS))

ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("StudyDate", STUDY, "study_date", match=DATE),
    Attribute("StudyTime", STUDY, "study_time", match=TIME),
    Attribute("AccessionNumber", STUDY, "accession_number", match=TEXT),
    Attribute("ModalitiesInStudy", STUDY, "modalities_in_study", COMPUTED, match=MODALITIES),
    Attribute("ReferringPhysicianName", STUDY, "referring_physician_name", match=NAME),
    Attribute("PatientName", PATIENT, "patient_name", match=NAME),
    Attribute("PatientID", PATIENT, "patient_id", match=TEXT),
    Attribute("PatientBirthDate", PATIENT, "patient_birth_date", METADATA),
    Attribute("PatientSex", PATIENT, "patient_sex", METADATA),
    Attribute(
        "NumberOfPatientRelatedStudies", PATIENT, "number_of_patient_related_studies", COMPUTED, default=False
    ),
    Attribute(
        "NumberOfPatientRelatedSeries", PATIENT, "number_of_patient_related_series", COMPUTED, default=False
    ),
    Attribute(
        "NumberOfPatientRelatedInstances",
        PATIENT,
        "number_of_patient_related_instances",
        COMPUTED,
        default=False,
    ),
    Attribute("PatientAge", STUDY, "patient_age", METADATA, default=False),
    Attribute("PatientIdentityRemoved", STUDY, "patient_identity_removed", METADATA, default=False),
    Attribute("StudyInstanceUID", STUDY, "study_instance_uid", match=UID),
    Attribute("StudyID", STUDY, "study_id", match=TEXT),
    Attribute("StudyDescription", STUDY, "study_description", METADATA),
    Attribute("NumberOfStudyRelatedSeries", STUDY, "number_of_study_related_series", COMPUTED),
    Attribute("NumberOfStudyRelatedInstances", STUDY, "number_of_study_related_instances", COMPUTED),
    Attribute("Modality", SERIES, "modality", match=TEXT),
    Attribute("SeriesDescription", SERIES, "series_description", METADATA),
    Attribute("SeriesNumber", SERIES, "series_number", match=NUMBER),
    Attribute("SeriesInstanceUID", SERIES, "series_instance_uid", match=UID),
    Attribute("PerformedProcedureStepStartDate", SERIES, "performed_procedure_step_start_date", match=DATE),
    Attribute("PerformedProcedureStepStartTime", SERIES, "performed_procedure_step_start_time", match=TIME),
    Attribute("NumberOfSeriesRelatedInstances", SERIES, "number_of_series_related_instances", COMPUTED),
    Attribute("BodyPartExamined", SERIES, "body_part_examined", METADATA, default=False),
    Attribute("Manufacturer", SERIES, "manufacturer", METADATA, default=False),
    Attribute("ManufacturerModelName", SERIES, "manufacturer_model_name", METADATA, default=False),
    Attribute("InstitutionName", SERIES, "institution_name", METADATA, default=False),
    Attribute("SOPClassUID", INSTANCE, "sop_class_uid", match=UID),
    Attribute("SOPInstanceUID", INSTANCE, "sop_instance_uid", match=UID),
    Attribute("InstanceNumber", INSTANCE, "instance_number", match=NUMBER),
    Attribute("Rows", INSTANCE, "rows", METADATA),
    Attribute("Columns", INSTANCE, "columns", METADATA),
    Attribute("BitsAllocated", INSTANCE, "bits_allocated", METADATA),
    Attribute("NumberOfFrames", INSTANCE, "number_of_frames", METADATA),
    Attribute("PhotometricInterpretation", INSTANCE, "photometric_interpretation", METADATA, default=False),
    Attribute("BurnedInAnnotation", INSTANCE, "burned_in_annotation", METADATA, default=False),
)
BY_KEYWORD: dict[str, Attribute] = {attribute.keyword: attribute for attribute in ATTRIBUTES}
# The DicomFile columns of the search index that ``apply_header`` fills (besides the UIDs it always set).
INDEX_FIELDS = (
    "patient_name",
    "referring_physician_name",
    "accession_number",
    "study_id",
    "study_date",
    "study_time",
    "series_number",
    "instance_number",
    "sop_class_uid",
    "performed_procedure_step_start_date",
    "performed_procedure_step_start_time",
)
_INDEXED_NAMES = {"patient_name"}
# Keys few entities match, with an index to find them by (see ``find``).
_SELECTIVE = {
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyDate",
}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


@dataclass(frozen=True)
class Match:
    """One study, series or instance found, with the attributes asked for.

    ``attributes`` maps a keyword to its values in DICOM's own text forms (DA ``YYYYMMDD``, TM
    ``HHMMSS.ffffff``, PN ``Family^Given``; IS and US as ints); an empty list is an attribute
    with no value (absent from the file, or withheld from this user).
    """

    study: str  # "" for a patient
    series: str | None
    instance: str | None
    attributes: dict[str, list[Any]]
    patient: str | None = None  # the Patient ID of a patient-level match


@dataclass(frozen=True)
class Page:
    """A page of matches in UID order; ``more`` says whether matches follow it."""

    matches: list[Match]
    more: bool


@dataclass(frozen=True)
class Query:
    """What to search for: a level, the path's UIDs, matching keys (keyword -> value as sent), return keys."""

    level: str
    filters: Mapping[str, str] = field(default_factory=dict)
    study: str | None = None
    series: str | None = None
    include: Collection[str] = ()
    include_all: bool = False


def attribute_keyword(key: str) -> str | None:
    """The keyword a query names by keyword (``PatientName``) or tag (``00100010``); None if it is neither."""
    if _TAG.match(key):
        return keyword_for_tag(int(key, 16)) or None
    return key if tag_for_keyword(key) is not None else None


def matching_keys(level: str) -> list[str]:
    """The keywords a query at ``level`` may match on (its own level's and those of the levels above)."""
    return [a.keyword for a in ATTRIBUTES if a.match is not None and DEPTH[a.level] <= DEPTH[level]]


def find(
    *, user: AbstractBaseUser, files: QuerySet[DicomFile], query: Query, limit: int, offset: int
) -> Page:
    """The page of entities at ``query.level`` among ``files`` (what ``user`` may see) that match ``query``.

    Reads only. ``limit`` and ``offset`` count entities. Raises :class:`SearchQueryError` for a key
    that is not a matching key at that level or a value that is malformed. A patient (PATIENT, for
    C-FIND) is a Patient ID that is not empty; for a user who may not see originals' patient data,
    only de-identified files make patients (an original's Patient ID is its patient data).
    """
    level = query.level
    in_full = access.may_see_patient_data(user, DicomFile(anonymized=False))
    if level == PATIENT:
        files = (
            files.exclude(patient_id="") if in_full else files.filter(anonymized=True).exclude(patient_id="")
        )
    matching = files
    selective = False
    if query.study is not None:
        matching = matching.filter(study_instance_uid=query.study)
    if query.series is not None:
        matching = matching.filter(series_instance_uid=query.series)
    rows_matching = matching
    for keyword, value in query.filters.items():
        attribute = BY_KEYWORD.get(keyword)
        if attribute is None or attribute.match is None or DEPTH[attribute.level] > DEPTH[level]:
            raise SearchQueryError(f"{keyword} is not a matching key of {level} searches")
        condition = _condition(attribute, value, files)
        if condition is None:
            continue
        if attribute.identifying and not in_full:
            # No oracle: an original's real value must not decide whether it matches.
            condition &= Q(anonymized=True)
        matching = matching.filter(condition)
        if attribute.match != MODALITIES:
            # A study's rows all meet ModalitiesInStudy when the study does: the rows of the
            # page's studies need not be checked again.
            rows_matching = rows_matching.filter(condition)
        selective = selective or keyword in _SELECTIVE

    key = _KEY_COLUMNS[level]
    entities = matching.order_by().values_list(*key).distinct()
    if selective:
        # Ordered by the UID index with a LIMIT, PostgreSQL walks the whole index when few
        # entities match (it expects them spread evenly); found through the keys' own indexes,
        # their UIDs sort here. Keys most entities match (a modality) keep the ordered walk.
        page = sorted(entities)[offset : offset + limit + 1]
    else:
        page = list(entities.order_by(*key)[offset : offset + limit + 1])
    more = len(page) > limit
    page = page[:limit]
    if not page:
        return Page(matches=[], more=False)

    returned = _returned(query)
    rows = _representatives(rows_matching, level, page, in_full=in_full)
    studies = (
        sorted({row.study_instance_uid for row in rows.values()})
        if level == PATIENT
        else sorted({k[0] for k in page})
    )
    computed = {a.keyword for a in returned if a.source == COMPUTED}
    patient_counts = _patient_aggregates(files, [k[0] for k in page]) if computed & _PATIENT_COMPUTED else {}
    study_counts = _study_aggregates(files, studies) if computed & _STUDY_COMPUTED else {}
    modalities = _modalities(files, studies) if "ModalitiesInStudy" in computed else {}
    series_counts = (
        _series_counts(files, sorted({row.series_instance_uid for row in rows.values()}))
        if "NumberOfSeriesRelatedInstances" in computed
        else {}
    )
    matches = []
    for entity in page:
        row = rows[entity]
        masked = not access.may_see_patient_data(user, row)
        attributes: dict[str, list[Any]] = {}
        for attribute in returned:
            if attribute.source == COMPUTED and attribute.keyword in _PATIENT_COMPUTED:
                values = [patient_counts.get(row.patient_id, {}).get(attribute.keyword, 0)]
            elif attribute.source == COMPUTED:
                values = _computed(attribute, row, study_counts, modalities, series_counts)
            elif masked and attribute.identifying:
                values = []
            else:
                values = _values(attribute, row)
            attributes[attribute.keyword] = values
        matches.append(
            Match(
                study=row.study_instance_uid if level != PATIENT else "",
                series=row.series_instance_uid if level in (SERIES, INSTANCE) else None,
                instance=row.sop_instance_uid if level == INSTANCE else None,
                attributes=attributes,
                patient=row.patient_id if level == PATIENT else None,
            )
        )
    return Page(matches=matches, more=more)


def index_columns(metadata: Mapping[str, Any], index_only: Mapping[str, Any]) -> dict[str, Any]:
    """The search index columns of a file (:data:`INDEX_FIELDS`) from its metadata and index-only values.

    Values that do not fit a column (a malformed date, a number that is not one) are left empty:
    the file is stored as it is, it is only not found by that key.
    """
    values = {**metadata, **index_only}
    return {
        "patient_name": _text(values.get("patient_name"), 400),
        "referring_physician_name": _text(values.get("referring_physician_name"), 400),
        "accession_number": _text(values.get("accession_number"), 64),
        "study_id": _text(values.get("study_id"), 64),
        "study_date": _date(values.get("study_date")),
        "study_time": _time(values.get("study_time")),
        "series_number": _number(values.get("series_number")),
        "instance_number": _number(values.get("instance_number")),
        "sop_class_uid": _text(values.get("sop_class_uid"), 64),
        "performed_procedure_step_start_date": _date(values.get("performed_procedure_step_start_date")),
        "performed_procedure_step_start_time": _time(values.get("performed_procedure_step_start_time")),
    }


# --- matching ---------------------------------------------------------------------------------


def _condition(attribute: Attribute, value: str, files: QuerySet[DicomFile]) -> Q | None:
    """The condition ``value`` sets on ``attribute``; None for universal matching (an empty value)."""
    keyword, column = attribute.keyword, attribute.key
    value = value.strip()
    if value in ("", "*"):
        return None
    if attribute.match == UID:
        uids = [uid.strip() for uid in re.split(r"[,\\]", value) if uid.strip()]
        if len(uids) > MAX_UIDS:
            raise SearchQueryError(f"{keyword}: more than {MAX_UIDS} UIDs")
        return Q(**{f"{column}__in": uids}) if len(uids) > 1 else Q(**{column: uids[0]}) if uids else None
    if attribute.match == MODALITIES:
        modalities = [m.strip() for m in re.split(r"[,\\]", value) if m.strip()]
        if any(len(m) > 16 for m in modalities):
            raise SearchQueryError(f"{keyword}: a modality is at most 16 characters")
        if not modalities:
            return None
        # A study matches as a whole: every instance of a study that has one of the modalities.
        having = files.filter(modality__in=modalities).order_by().values("study_instance_uid")
        return Q(study_instance_uid__in=having)
    if attribute.match in (TEXT, NAME):
        longest = MAX_NAME if attribute.match == NAME else MAX_TEXT
        if len(value) > longest:
            raise SearchQueryError(f"{keyword}: a value is at most {longest} characters")
        insensitive = attribute.match == NAME
        if "*" in value or "?" in value:
            if value.count("*") > MAX_STARS:
                raise SearchQueryError(f"{keyword}: at most {MAX_STARS} '*' wildcards")
            lookup = "iregex" if insensitive else "regex"
            condition = Q(**{f"{column}__{lookup}": _wildcard_regex(value, files.db)})
        else:
            condition = Q(**{f"{column}__iexact" if insensitive else column: value})
        if insensitive and column in _INDEXED_NAMES:
            return _indexed_name(column, value, condition)
        return condition
    if attribute.match == NUMBER:
        if not re.fullmatch(r"[+-]?\d{1,9}", value):
            raise SearchQueryError(f"{keyword}: not an integer")
        return Q(**{column: int(value)})
    if attribute.match == DATE:
        low, high = _range(value, _date_bounds, keyword, "a date (YYYYMMDD) or a date range")
    else:
        low, high = _range(value, _time_bounds, keyword, "a time (HHMMSS.FFFFFF) or a time range")
    condition = Q()
    if low is not None:
        condition &= Q(**{f"{column}__gte": low})
    if high is not None:
        condition &= Q(**{f"{column}__lte": high})
    return condition


def _indexed_name(column: str, value: str, condition: Q) -> Q:
    """``condition`` (a name matched case-insensitively) in a form the name's indexes answer.

    A whole name or a prefix (``DOE*``) is compared upper-cased, which PostgreSQL answers from its
    index on ``UPPER(patient_name)`` (migration 0004). Other patterns take the names that match
    from the narrow plain index (an index-only scan) and then the rows that have them, rather than
    a regular expression on every row of the wide table. Upper-casing here is only done for ASCII
    (Python's and the database's rules agree there).
    """
    stem = value[:-1] if value.endswith("*") else value
    if stem and stem.isascii() and "*" not in stem and "?" not in stem:
        lookup = StartsWith if value.endswith("*") else Exact
        return Q(lookup(Upper(F(column)), stem.upper()))
    return Q(**{f"{column}__in": DicomFile.objects.filter(condition).order_by().values(column)})


def _range(value: str, bounds, keyword: str, what: str) -> tuple[Any, Any]:
    """(low, high) of a single value or a range; either may be None (open)."""
    try:
        if "-" not in value:
            return bounds(value)
        first, _, last = value.partition("-")
        if not first and not last:
            raise ValueError("no bound")
        low = bounds(first)[0] if first else None
        high = bounds(last)[1] if last else None
        return low, high
    except ValueError:
        raise SearchQueryError(f"{keyword}: not {what}") from None


def _date_bounds(text: str) -> tuple[dt.date, dt.date]:
    text = text.strip()
    if len(text) != 8 or not text.isdigit():
        raise ValueError("not YYYYMMDD")
    day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    return day, day


def _time_bounds(text: str) -> tuple[dt.time, dt.time]:
    """The first and last instant of the unit a TM value names (``10`` -> 10:00:00 .. 10:59:59.999999)."""
    main, dot, fraction = text.strip().replace(":", "").partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6) or (dot and (len(main) != 6 or not fraction)):
        raise ValueError("not HH[MM[SS[.F]]]")
    if fraction and (not fraction.isdigit() or len(fraction) > 6):
        raise ValueError("not a fraction of a second")
    hour, minute, second = (int(main[i : i + 2]) if len(main) > i else None for i in (0, 2, 4))
    low = dt.time(hour, minute or 0, second or 0, int(fraction.ljust(6, "0")) if fraction else 0)
    if fraction:
        high = low.replace(microsecond=low.microsecond + 10 ** (6 - len(fraction)) - 1)
    else:
        high = dt.time(hour, 59 if minute is None else minute, 59 if second is None else second, 999999)
    return low, high


def _wildcard_regex(value: str, alias: str) -> str:
    """An anchored regular expression for a DICOM wildcard value (``*`` any run, ``?`` one character).

    PostgreSQL's regex engine does not backtrack; on SQLite (Python's ``re``) the runs between
    stars are matched atomically, as ``fnmatch`` does, so no value makes a search take exponential time.
    """
    pieces = [
        "".join("." if char == "?" else char if char.isalnum() else "\\" + char for char in part)
        for part in re.sub(r"\*+", "*", value).split("*")
    ]
    if len(pieces) == 1:
        return f"^{pieces[0]}$"
    if connections[alias].vendor == "postgresql":
        return "^" + ".*".join(pieces) + "$"
    middle = "".join(f"(?>.*?{piece})" for piece in pieces[1:-1])
    return f"^{pieces[0]}{middle}.*{pieces[-1]}$"


# --- results ----------------------------------------------------------------------------------


_STUDY_COMPUTED = {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}
_PATIENT_COMPUTED = {
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
}


def _returned(query: Query) -> list[Attribute]:
    """The attributes each match carries, in catalogue order.

    The level's default attributes; those of the levels above when the resource is not scoped to
    one of their entities (``/series``, ``/instances``, ``/studies/{study}/instances``); the UIDs
    naming the entity; the attributes matched on; and those asked for (every one with ``include_all``).
    """
    depth = DEPTH[query.level]
    scoped = {STUDY: query.study is not None and depth > 0, SERIES: query.series is not None and depth > 1}
    scoped[PATIENT] = scoped[STUDY]  # a study's resource is one patient's
    wanted = set(query.filters) | set(query.include)
    chosen = []
    for attribute in ATTRIBUTES:
        attribute_depth = DEPTH[attribute.level]
        if attribute_depth > depth:
            continue
        names_entity = attribute.key in _KEY_COLUMNS[query.level]
        by_default = attribute.default and (
            attribute_depth == depth or not scoped.get(attribute.level, False)
        )
        if query.include_all or names_entity or by_default or attribute.keyword in wanted:
            chosen.append(attribute)
    return chosen


def _representatives(
    matching: QuerySet[DicomFile], level: str, page: list[tuple], *, in_full: bool
) -> dict[tuple, DicomFile]:
    """One matching row per entity of ``page``: the newest, a de-identified one first for those who need it."""
    key = _KEY_COLUMNS[level]
    rows = matching.filter(**{f"{key[-1]}__in": [entity[-1] for entity in page]})
    if level not in (PATIENT, STUDY):
        rows = rows.filter(study_instance_uid__in={entity[0] for entity in page})
    order = [F("created_at").desc(), F("id").desc()]
    if not in_full:
        order.insert(0, F("anonymized").desc())
    ranked = rows.annotate(
        _rank=Window(RowNumber(), partition_by=[F(column) for column in key], order_by=order)
    ).filter(_rank=1)
    found = {tuple(getattr(row, column) for column in key): row for row in ranked}
    return {entity: found[entity] for entity in page if entity in found}


def _study_aggregates(files: QuerySet[DicomFile], studies: list[str]) -> dict[str, dict[str, int]]:
    counted = (
        files.filter(study_instance_uid__in=studies)
        .order_by()
        .values("study_instance_uid")
        .annotate(
            series=Count("series_instance_uid", distinct=True),
            instances=Count("sop_instance_uid", distinct=True),
        )
    )
    return {row["study_instance_uid"]: row for row in counted}


def _patient_aggregates(files: QuerySet[DicomFile], patients: list[str]) -> dict[str, dict[str, int]]:
    counted = (
        files.filter(patient_id__in=patients)
        .order_by()
        .values("patient_id")
        .annotate(
            studies=Count("study_instance_uid", distinct=True),
            series=Count("series_instance_uid", distinct=True),
            instances=Count("sop_instance_uid", distinct=True),
        )
    )
    return {
        row["patient_id"]: {
            "NumberOfPatientRelatedStudies": row["studies"],
            "NumberOfPatientRelatedSeries": row["series"],
            "NumberOfPatientRelatedInstances": row["instances"],
        }
        for row in counted
    }


def _modalities(files: QuerySet[DicomFile], studies: list[str]) -> dict[str, list[str]]:
    pairs = (
        files.filter(study_instance_uid__in=studies)
        .exclude(modality="")
        .order_by()
        .values_list("study_instance_uid", "modality")
        .distinct()
    )
    found: dict[str, list[str]] = {}
    for study, modality in pairs:
        found.setdefault(study, []).append(modality)
    return {study: sorted(modalities) for study, modalities in found.items()}


def _series_counts(files: QuerySet[DicomFile], series: list[str]) -> dict[str, int]:
    counted = (
        files.filter(series_instance_uid__in=series)
        .order_by()
        .values("series_instance_uid")
        .annotate(instances=Count("sop_instance_uid", distinct=True))
    )
    return {row["series_instance_uid"]: row["instances"] for row in counted}


def _computed(attribute: Attribute, row: DicomFile, study_counts, modalities, series_counts) -> list[Any]:
    keyword = attribute.keyword
    if keyword == "ModalitiesInStudy":
        return modalities.get(row.study_instance_uid, [])
    if keyword == "NumberOfSeriesRelatedInstances":
        return [series_counts.get(row.series_instance_uid, 0)]
    counts = study_counts.get(row.study_instance_uid, {})
    return [counts.get("series" if keyword == "NumberOfStudyRelatedSeries" else "instances", 0)]


def _values(attribute: Attribute, row: DicomFile) -> list[Any]:
    """``attribute``'s values on ``row`` in DICOM's text forms; [] when it has none."""
    if attribute.source == COLUMN:
        value = getattr(row, attribute.key)
    else:
        value = (row.metadata or {}).get(attribute.key)
    if value is None or value == "":
        return []
    values = value if isinstance(value, list) else [value]
    return [_dicom_text(v) for v in values if v not in (None, "")]


def _dicom_text(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, dt.time):
        text = value.strftime("%H%M%S")
        return f"{text}.{value.microsecond:06d}" if value.microsecond else text
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value.replace("-", "")  # an ISO date of the metadata object
    return value


# --- index columns ----------------------------------------------------------------------------


def _text(value: Any, longest: int) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = "\\".join(str(v) for v in value if v is not None)
    return str(value)[:longest]


def _date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _time(value: Any) -> dt.time | None:
    try:
        return dt.time.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _number(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = int(value)
    return number if -(2**31) <= number < 2**31 else None
