"""A stored file's header as the DICOM JSON Model (PS3.18 F.2), large binary values as BulkDataURIs.

Only the header is read (``stop_before_pixels``, large values deferred, never loaded): the pixel
data element is located in the file, not read, and named by a BulkDataURI like every other binary
value longer than :data:`BULK_DATA_THRESHOLD`. A BulkDataURI is ``<instance URL>/bulkdata/<path>``
where the path names the element from the top level: tags as 8 hex digits, item indexes (from 0)
between them, e.g. ``7FE00010`` or ``00540016/0/00181074`` (:func:`parse_bulk_data_path`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

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
    ds: Dataset, *, bulk_data_uri: str, prefix: tuple[tuple[int, int], ...] = ()
) -> dict[str, Any]:
    """``ds`` as a DICOM JSON object; binary values beyond the threshold as ``{bulk_data_uri}/<path>``.

    ``bulk_data_uri`` is the instance's absolute ``.../bulkdata`` URL. Group 0002 (file meta) is
    not part of the model. No side effects; values are the file's own (the caller decides who may
    see them).
    """
    result: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        if Tag(tag).group == 0x0002:
            continue
        raw = ds.get_item(tag)
        key = f"{int(tag):08X}"
        # A deferred element (value beyond defer_size) is converted without loading its value.
        deferred = isinstance(raw, RawDataElement) and raw.value is None
        if deferred and (raw.VR in BINARY_VRS or raw.VR is None):
            result[key] = {
                "vr": raw.VR or "UN",
                "BulkDataURI": f"{bulk_data_uri}/{BulkDataPath(prefix, int(tag))}",
            }
            continue
        element = ds[tag]
        if element.VR == "SQ":
            items = [
                dataset_to_json(item, bulk_data_uri=bulk_data_uri, prefix=(*prefix, (int(tag), index)))
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
            result[key] = element.to_json_dict(None, BULK_DATA_THRESHOLD * 1024)
        except Exception:
            # A value pydicom cannot convert (an invalid number string...) is sent as its VR only,
            # rather than losing the whole instance's metadata.
            result[key] = {"vr": element.VR}
    return result


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
