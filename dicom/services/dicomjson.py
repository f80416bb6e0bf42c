"""A stored file's header as the DICOM JSON Model (PS3.18 F.2), large binary values as BulkDataURIs.

Only the header is read (``stop_before_pixels``, large values deferred, never loaded): the pixel
data element is located in the file, not read, and named by a BulkDataURI like every other binary
value longer than :data:`BULK_DATA_THRESHOLD`. A BulkDataURI is ``<instance URL>/bulkdata/<path>``
where the path names the element from the top level: tags as 8 hex digits, item indexes (from 0)
between them, e.g. ``7FE00010`` or ``00540016/0/00181074`` (:func:`parse_bulk_data_path`).
"""

from __future__ import annotations

import base64
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom.services.errors import DicomServiceError, FileNotFoundInServiceError
from dicom.services.rendering import pixel_element_at

# Binary VRs whose values are sent as BulkDataURIs beyond this many bytes (InlineBinary below it).
BULK_DATA_THRESHOLD = 1024
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
AVAILABLE_TRANSFER_SYNTAX_UID = "00083002"
_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*$")


class UnreadableHeaderError(DicomServiceError):
    """The stored file's header cannot be read as DICOM (it was valid when stored: storage damage)."""

    status_code = 422


@dataclass(frozen=True)
class BulkDataPath:
    """An element inside a dataset: ``steps`` are (sequence tag, item index) pairs, then ``tag``."""

    steps: tuple[tuple[int, int], ...]
    tag: int

    def __str__(self) -> str:
        parts = [f"{tag:08X}/{index}" for tag, index in self.steps]
        return "/".join([*parts, f"{self.tag:08X}"])


def parse_bulk_data_path(text: str) -> BulkDataPath:
    """The path of a BulkDataURI (``00540016/0/00181074``); raises a 404 for anything else."""
    if not _PATH.match(text):
        raise FileNotFoundInServiceError("no such bulk data (the path is not a tag path of this service)")
    pieces = text.split("/")
    steps = tuple((int(pieces[i], 16), int(pieces[i + 1])) for i in range(0, len(pieces) - 1, 2))
    return BulkDataPath(steps=steps, tag=int(pieces[-1], 16))


def read_header(fp: BinaryIO) -> tuple[Dataset, DataElement | None]:
    """Read a Part 10 file's header, deferring values over the threshold; locate its pixel data.

    Returns the dataset (without pixel data) and a stand-in element for the pixel data (VR and
    length only, value None) or None. ``fp`` is read from its current position. Raises
    UnreadableHeaderError.
    """
    try:
        ds = dcmread(fp, stop_before_pixels=True, defer_size=BULK_DATA_THRESHOLD)
        located = pixel_element_at(fp, ds)
    except Exception as exc:
        raise UnreadableHeaderError(
            f"the stored file's header cannot be read ({type(exc).__name__})"
        ) from exc
    if located is None:
        return ds, None
    tag = {"PixelData": 0x7FE00010, "FloatPixelData": 0x7FE00008, "DoubleFloatPixelData": 0x7FE00009}[
        located.keyword
    ]
    vr = located.vr or "OW"  # implicit VR: native pixel data of more than 8 bits is OW
    return ds, DataElement(tag, vr, None)


def _is_bulk(element: DataElement | RawDataElement, length: int | None) -> bool:
    return element.VR in BINARY_VRS and (length is None or length > BULK_DATA_THRESHOLD)


def _length(element: DataElement) -> int | None:
    # A deferred value is known only by its length in the file; never load it for JSON.
    if element.tag in PIXEL_DATA_TAGS and element.value is None:
        return None
    value = element.value
    if isinstance(value, bytes | bytearray):
        return len(value)
    return 0 if value is None else None


def dataset_to_json(
    ds: Dataset,
    *,
    bulk_data_uri: str,
    prefix: tuple[tuple[int, int], ...] = (),
    charset: str | None = "",
) -> dict[str, Any]:
    """``ds`` as a DICOM JSON object; binary values beyond the threshold as ``{bulk_data_uri}/<path>``.

    ``bulk_data_uri`` is the instance's absolute ``.../bulkdata`` URL. Group 0002 (file meta) is
    not part of the model. No side effects; values are the file's own (the caller decides who may
    see them).
    """
    result: dict[str, Any] = {}
    if 0x00080005 in ds:
        charset = _text_encoding(ds.get("SpecificCharacterSet"))
    elif charset == "":
        charset = "latin-1"
    # Dataset.items() gives the elements as read, unconverted: converting each through ds[tag]
    # costs more than everything else here.
    for tag, raw in sorted(ds.items(), key=lambda pair: pair[0]):
        if tag >> 16 == 0x0002:
            continue
        key = f"{tag:08X}"
        is_raw = isinstance(raw, RawDataElement)
        # A deferred element (value beyond defer_size) is converted without loading its value.
        if is_raw and raw.value is None and (raw.VR in BINARY_VRS or raw.VR is None):
            result[key] = {
                "vr": raw.VR or "UN",
                "BulkDataURI": f"{bulk_data_uri}/{BulkDataPath(prefix, int(tag))}",
            }
            continue
        if is_raw and raw.VR not in (None, "SQ") and charset is not None:
            try:
                fast = _raw_json(raw, charset)
            except (ValueError, struct.error):
                fast = None  # an invalid number string: pydicom's conversion decides
            if fast is not None:
                result[key] = fast
                continue
        element = ds[tag]
        if element.VR == "SQ":
            items = [
                dataset_to_json(
                    item, bulk_data_uri=bulk_data_uri, prefix=(*prefix, (int(tag), index)), charset=charset
                )
                for index, item in enumerate(element.value)
            ]
            result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        if _is_bulk(element, _length(element)):
            result[key] = {
                "vr": element.VR,
                "BulkDataURI": f"{bulk_data_uri}/{BulkDataPath(prefix, int(tag))}",
            }
            continue
        try:
            result[key] = _element_json(element)
        except Exception:
            # A value pydicom cannot convert (an invalid number string...) is sent as its VR only,
            # rather than losing the whole instance's metadata.
            result[key] = {"vr": element.VR}
    return result


_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "IS"})
_FLOAT_VRS = frozenset({"FL", "FD", "DS"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _values(element: DataElement) -> list:
    value = element.value
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _person_name(value) -> dict[str, str] | None:
    groups = str(value).split("=")
    named = {name: group for name, group in zip(_PN_GROUPS, groups, strict=False) if group}
    return named or None


def _number(value, kind: type) -> int | float | None:
    if value is None or value == "":
        return None
    number = kind(value)
    if kind is float and not math.isfinite(number):
        return None  # JSON has no NaN or infinity
    if kind is float and number.is_integer() and abs(number) < 2**53:
        return (
            int(number)
            if isinstance(value, str) and "." not in value and "e" not in value.lower()
            else number
        )
    return number


def _element_json(element: DataElement) -> dict[str, Any]:
    """One non-sequence, non-bulk element as PS3.18 F.2.2 (strings, numbers, names, tags, inline binary).

    The common VRs are converted here (pydicom's own ``to_json_dict`` checks more and is several
    times slower: a 300-instance series' metadata is mostly this function); others go to pydicom.
    """
    vr = element.VR
    if vr in BINARY_VRS:
        value = element.value
        return (
            {"vr": vr, "InlineBinary": base64.b64encode(bytes(value)).decode("ascii")}
            if value
            else {"vr": vr}
        )
    values = _values(element)
    if not values:
        return {"vr": vr}
    if vr in _STRING_VRS:
        converted = [None if v == "" else str(v) for v in values]
    elif vr in _INT_VRS:
        converted = [_number(v, int) for v in values]
    elif vr in _FLOAT_VRS:
        converted = [_number(v, float) for v in values]
    elif vr == "PN":
        converted = [_person_name(v) for v in values]
    elif vr == "AT":
        converted = [f"{int(v):08X}" for v in values]
    else:
        return element.to_json_dict(None, BULK_DATA_THRESHOLD * 1024)
    return {"vr": vr, "Value": converted}


_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}


def _text_encoding(value) -> str | None:
    """The Python codec of a Specific Character Set this module decodes itself; None for the others."""
    if value in (None, "", "ISO_IR 6"):
        return "latin-1"  # ASCII; latin-1 never fails on a stray byte
    if value == "ISO_IR 100":
        return "latin-1"
    if value == "ISO_IR 192":
        return "utf-8"
    return None  # ISO 2022 code extensions and the rest: pydicom's own decoding


def _raw_json(raw: RawDataElement, encoding: str) -> dict[str, Any] | None:
    """A raw (unconverted) element straight from its bytes, for the common VRs; None to let pydicom do it.

    Converting through ``Dataset.__getitem__`` costs more than everything else of the metadata
    (each element is converted, validated and stored back); these VRs need none of that.
    """
    vr, data = raw.VR, raw.value
    if data is None:
        return None
    if not data:
        return {"vr": vr}
    if vr in _BINARY_NUMBERS:
        code = _BINARY_NUMBERS[vr]
        size = struct.calcsize(f"<{code}")
        if len(data) % size:
            return None
        order = "<" if raw.is_little_endian else ">"
        values = list(struct.unpack(f"{order}{len(data) // size}{code}", data))
        if vr in ("FL", "FD"):
            values = [v if math.isfinite(v) else None for v in values]
        return {"vr": vr, "Value": values}
    if vr == "PN" or vr in _STRING_VRS or vr in _INT_VRS or vr in _FLOAT_VRS:
        text = data.decode(encoding, errors="replace")
        pieces = [text] if vr in _SINGLE_VALUED else text.split("\\")
        if vr in _TEXT_VRS:
            pieces = [piece.rstrip(" \x00") for piece in pieces]
        else:
            pieces = [piece.strip(" \x00") for piece in pieces]
        if vr in _INT_VRS:
            converted = [int(piece) if piece else None for piece in pieces]
        elif vr in _FLOAT_VRS:
            converted = [_number(piece, float) for piece in pieces]
        elif vr == "PN":
            converted = [_person_name(piece) for piece in pieces]
        else:
            converted = [piece or None for piece in pieces]
        if all(value is None for value in converted):
            return {"vr": vr}
        return {"vr": vr, "Value": converted}
    return None


def instance_json(fp: BinaryIO, *, bulk_data_uri: str, transfer_syntax_uid: str) -> dict[str, Any]:
    """The DICOM JSON object of the stored file open at ``fp`` (header only), with its pixel data URI.

    Adds Available Transfer Syntax UID (0008,3002): the syntax the file is stored (and by default
    retrieved) in. Raises UnreadableHeaderError.
    """
    ds, pixels = read_header(fp)
    result = dataset_to_json(ds, bulk_data_uri=bulk_data_uri)
    if pixels is not None:
        result[f"{pixels.tag:08X}"] = {"vr": pixels.VR, "BulkDataURI": f"{bulk_data_uri}/{pixels.tag:08X}"}
    if transfer_syntax_uid:
        result[AVAILABLE_TRANSFER_SYNTAX_UID] = {"vr": "UI", "Value": [transfer_syntax_uid]}
    return dict(sorted(result.items()))


def find_element(ds: Dataset, path: BulkDataPath) -> DataElement:
    """The element at ``path`` in a fully read dataset; 404 when the path leads nowhere."""
    current = ds
    try:
        for tag, index in path.steps:
            element = current[tag]
            if element.VR != "SQ":
                raise KeyError(tag)
            current = element.value[index]
        return current[path.tag]
    except (KeyError, IndexError) as exc:
        raise FileNotFoundInServiceError("no such bulk data in this instance") from exc
