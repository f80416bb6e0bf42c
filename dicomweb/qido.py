"""QIDO-RS (PS3.18 10.6): search for studies, series and instances, answered as DICOM JSON.

The matching itself is :mod:`dicom.services.search` (shared with the DIMSE C-FIND SCP, dimse.find); this
module reads the query string, negotiates the response type, writes PS3.18 F.2 JSON and names the
UIDs it answered with in the request's audit row.

- Query keys: attributes by keyword or tag (``PatientName=``, ``00100010=``), each at most once;
  ``includefield`` (repeatable, comma-separated; keywords, tags or ``all``); ``limit`` (default
  :data:`DEFAULT_LIMIT`, at most :data:`MAX_LIMIT`; more is answered with that many) and ``offset``;
  ``fuzzymatching`` (``true`` or ``false``). Anything else is a 400 whose detail names the key.
- ``fuzzymatching=true`` changes nothing (names already match case-insensitively): the response
  carries the Warning PS3.18 8.3.4.2 prescribes for a server without fuzzy matching.
- When results are cut short by the server's limit (the client asked for none, or for more than
  :data:`MAX_LIMIT`), the response carries PS3.18's "number of results exceeded" Warning.
- No match is ``200`` with ``[]``.
"""

from __future__ import annotations

import functools
import json
import re
from urllib.parse import urlsplit

from django.http import HttpResponse
from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicom.services.errors import DicomServiceError
from dicom.services.search import (
    INSTANCE,
    SERIES,
    STUDY,
    Match,
    Query,
    SearchQueryError,
    attribute_keyword,
    find,
)
from dicomweb.base import service_root
from dicomweb.selectors import stored_files

__all__ = ["INSTANCE", "SERIES", "STUDY", "search"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DICOM_JSON = "application/dicom+json"
_ACCEPTABLE = (DICOM_JSON, "application/json")
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_SAFE_KEY = re.compile(r"^[A-Za-z0-9]{1,64}$")
_NUMERIC_VRS = {"IS", "US", "SS", "UL", "SL", "FL", "FD", "DS", "UV", "SV"}


class NotAcceptable(DicomServiceError):
    status_code = 406


def search(view, request, *, level: str, study: str | None = None, series: str | None = None):
    """Answer a QIDO-RS request at ``level`` (``/studies``, ``.../series``, ``.../instances``).

    Reads only; names the UIDs answered with in ``view.op``. Raises ``SearchQueryError`` (400)
    for a query it cannot answer and :class:`NotAcceptable` (406) for an Accept it cannot meet.
    """
    content_type = _negotiate(request.META.get("HTTP_ACCEPT", ""))
    params = request.query_params
    filters: dict[str, str] = {}
    for key, values in params.lists():
        if key in _CONTROL:
            continue
        keyword = attribute_keyword(key)
        if keyword is None:
            raise SearchQueryError(f"unknown query key {_named(key)}")
        if keyword in filters or len(values) > 1:
            raise SearchQueryError(f"query key {keyword} given more than once")
        filters[keyword] = values[0]
    include, include_all = _includefield(params.getlist("includefield"))
    limit = _count(params.get("limit"), "limit", DEFAULT_LIMIT, minimum=1)
    offset = _count(params.get("offset"), "offset", 0, minimum=0)
    fuzzy = params.get("fuzzymatching", "false").strip().lower()
    if fuzzy not in ("true", "false"):
        raise SearchQueryError("fuzzymatching must be true or false")
    capped = limit > MAX_LIMIT or "limit" not in params
    limit = min(limit, MAX_LIMIT)

    page = find(
        user=request.user,
        files=stored_files(request.user),
        query=Query(
            level=level, filters=filters, study=study, series=series, include=include, include_all=include_all
        ),
        limit=limit,
        offset=offset,
    )
    if view.op is not None:
        view.op.touch(
            studies=[m.study for m in page.matches],
            series=[m.series for m in page.matches if m.series],
            instances=[m.instance for m in page.matches if m.instance],
        )
    # RetrieveURL and InstanceAvailability are default return attributes at every level (PS3.18
    # Tables 10.6.3-3 to -5).
    root = service_root(request)
    body = [_dicom_json(match, root) for match in page.matches]
    response = HttpResponse(json.dumps(body, separators=(",", ":")), content_type=content_type)
    warnings = []
    host = urlsplit(root).netloc  # the warn-agent (RFC 7234 5.5): the service as the client reached it
    if fuzzy == "true":
        warnings.append(
            f'299 {host} "The fuzzymatching parameter is not supported. Only literal matching has been performed."'
        )
    if page.more and capped:
        warnings.append(
            f'299 {host} "The number of results exceeded the maximum supported by the server. '
            'Additional results can be requested."'
        )
    if warnings:
        response["Warning"] = ", ".join(warnings)
    return response


def _negotiate(accept: str) -> str:
    """The media type to answer in: DICOM JSON unless the client takes only plain JSON; 406 otherwise."""
    if not accept.strip():
        return DICOM_JSON
    best, best_q = None, 0.0
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        media = media.lower()
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media in ("*/*", "application/*", DICOM_JSON):
            chosen = DICOM_JSON
        elif media == "application/json":
            chosen = "application/json"
        else:
            continue
        # Equal qualities prefer DICOM JSON, the type QIDO-RS names.
        if quality > best_q or (quality == best_q and chosen == DICOM_JSON):
            best, best_q = chosen, quality
    if best is None:
        raise NotAcceptable(f"search results are available as {' or '.join(_ACCEPTABLE)}")
    return best


def _named(key: str) -> str:
    # A key is named back only when it could be an attribute's name: nothing else a client typed.
    return key if _SAFE_KEY.match(key) else "(not an attribute keyword or tag)"


def _includefield(values: list[str]) -> tuple[set[str], bool]:
    include: set[str] = set()
    include_all = False
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            if name.lower() == "all":
                include_all = True
                continue
            keyword = attribute_keyword(name)
            if keyword is None:
                # Not named back: it is a value the client sent, and could be anything.
                raise SearchQueryError("includefield: a value is neither an attribute keyword nor a tag")
            include.add(keyword)
    return include, include_all


def _count(value: str | None, name: str, default: int, *, minimum: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"\d{1,9}", value.strip()) or int(value) < minimum:
        raise SearchQueryError(f"{name} must be an integer of at least {minimum}")
    return int(value)


def _dicom_json(match: Match, root: str) -> dict:
    """A match as a PS3.18 F.2 JSON object, tags in ascending order."""
    elements: dict[str, dict] = {}
    for keyword, values in match.attributes.items():
        tag, vr = _tag_and_vr(keyword)
        element: dict = {"vr": vr}
        if values:
            element["Value"] = [_json_value(vr, value) for value in values]
        elements[tag] = element
    url = f"{root}/studies/{match.study}"
    if match.series is not None:
        url += f"/series/{match.series}"
    if match.instance is not None:
        url += f"/instances/{match.instance}"
    elements["00081190"] = {"vr": "UR", "Value": [url]}
    # Every instance searched for has its bytes in the service's storage (stored_files).
    elements["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    return dict(sorted(elements.items()))


@functools.cache
def _tag_and_vr(keyword: str) -> tuple[str, str]:
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}", dictionary_VR(tag)


def _json_value(vr: str, value):
    if vr == "PN":
        groups = str(value).split("=")
        return {
            name: group
            for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)
            if group
        }
    if vr in _NUMERIC_VRS and isinstance(value, str):
        try:
            return int(value) if vr in ("IS", "US", "SS", "UL", "SL", "UV", "SV") else float(value)
        except ValueError:
            return value
    return value
