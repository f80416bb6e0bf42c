"""Byte-level pieces that let :func:`deidentify_file` copy pixel data instead of loading it.

The engine reads the header with ``dcmread(stop_before_pixels=True)``, which leaves the file positioned
at the first top-level pixel data element. :func:`plan_pixel_copy` walks that element's header (and,
when encapsulated, its item headers) without reading a single pixel, so it knows which byte range to
copy; :func:`read_tail` parses whatever follows as a dataset of its own; :func:`copy_pixel_bytes`
copies the range in fixed-size chunks and :func:`write_tail` encodes the de-identified tail exactly as
pydicom would have encoded it as part of the whole dataset. Nothing here decodes pixel data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from struct import Struct
from typing import BinaryIO

from pydicom.charset import convert_encodings
from pydicom.charset import default_encoding as DEFAULT_ENCODING
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from dicom.services.errors import InvalidDicomError

PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
# Explicit VRs with 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
COPY_CHUNK = 1024 * 1024
# Tail values larger than this stay on disk until the engine asks for them; those it removes
# (private data, signatures, padding) are never read at all.
TAIL_DEFER_SIZE = 64 * 1024

_TAG_LENGTH = {True: Struct("<HHL"), False: Struct(">HHL")}
_EXPLICIT = {True: Struct("<HH2sH"), False: Struct(">HH2sH")}
_U32 = {True: Struct("<L"), False: Struct(">L")}


class NotStreamable(Exception):
    """The file is readable but its pixel data cannot be copied as bytes: use the in-memory path."""


@dataclass(frozen=True)
class PixelRun:
    """The run of consecutive top-level pixel data elements: ``[start, end)`` of the source."""

    start: int
    end: int
    tags: tuple[int, ...]
    source_size: int


def _source_size(fp: BinaryIO) -> int:
    here = fp.tell()
    size = fp.seek(0, os.SEEK_END)
    fp.seek(here)
    return size


def _element_header(header: bytes, *, implicit: bool, little: bool) -> tuple[int, int, int]:
    """Tag, header size and value length of the element whose first 12 (or 8) bytes are ``header``."""
    if implicit:
        group, elem, length = _TAG_LENGTH[little].unpack_from(header)
        return group << 16 | elem, 8, length
    group, elem, vr, length = _EXPLICIT[little].unpack_from(header)
    if vr in LONG_VRS:
        if len(header) < 12:
            raise NotStreamable("the pixel data element header is cut short")
        return group << 16 | elem, 12, _U32[little].unpack_from(header, 8)[0]
    if not (b"AA" <= vr <= b"ZZ"):
        # pydicom would read this element as implicit VR and re-encode it: not a byte copy.
        raise NotStreamable("pixel data element without an explicit VR")
    return group << 16 | elem, 8, length


def _skip_items(fp: BinaryIO, pos: int, size: int, *, little: bool) -> int:
    """Walk the items of encapsulated pixel data from ``pos``; return the offset after its delimiter."""
    tag_length = _TAG_LENGTH[little]
    while True:
        fp.seek(pos)
        header = fp.read(8)
        if len(header) < 8:
            raise NotStreamable("encapsulated pixel data has no sequence delimiter")
        group, elem, length = tag_length.unpack(header)
        tag = group << 16 | elem
        pos += 8
        if tag == SEQUENCE_DELIMITER:
            return pos
        if tag != ITEM or length == UNDEFINED_LENGTH:
            raise NotStreamable("encapsulated pixel data holds something other than defined-length items")
        pos += length
        if pos > size:
            raise NotStreamable("an encapsulated pixel data fragment is cut short")


def plan_pixel_copy(fp: BinaryIO, *, implicit: bool, little: bool) -> PixelRun | None:
    """Find the pixel data elements that start at ``fp``'s position, reading element headers only.

    Returns None when the dataset ends there (fewer than 8 bytes left, as pydicom's reader sees it).
    Leaves ``fp`` at the end of the run. Raises :class:`NotStreamable` when what is there is not a
    complete, well-formed run of pixel data elements in tag order. A file cut short inside its pixel
    data is one: pydicom's whole-file read keeps what is there, and the in-memory path does the same as
    before (the upload path's validator refuses such files before they reach the engine).
    """
    start = pos = fp.tell()
    size = _source_size(fp)
    tags: list[int] = []
    while True:
        fp.seek(pos)
        header = fp.read(12)
        if len(header) < 8:
            break
        group, elem, _ = _TAG_LENGTH[little].unpack_from(header)
        tag = group << 16 | elem
        if tag not in PIXEL_DATA_TAGS:
            break
        if tags and tag <= tags[-1]:
            raise NotStreamable("pixel data elements out of tag order")
        tag, header_size, length = _element_header(header, implicit=implicit, little=little)
        value_start = pos + header_size
        if length == UNDEFINED_LENGTH:
            pos = _skip_items(fp, value_start, size, little=little)
        else:
            pos = value_start + length
            if pos > size:
                raise NotStreamable("the pixel data is cut short")
        tags.append(tag)
    fp.seek(pos)
    if not tags:
        if size - start >= 8:
            raise NotStreamable("the header read stopped before something other than pixel data")
        return None
    return PixelRun(start=start, end=pos, tags=tuple(tags), source_size=size)


def read_tail(fp: BinaryIO, *, implicit: bool, little: bool, encoding: str | list[str]) -> Dataset:
    """Parse the top-level elements after the pixel data, from ``fp``'s position to the end.

    Values above :data:`TAIL_DEFER_SIZE` are deferred (read from the source only if accessed). The
    elements stay raw, as in a whole-file ``dcmread``. Raises :class:`NotStreamable` when pydicom would
    switch VR encoding for the tail, which the whole-file read would not have done.
    """
    tail = read_dataset(
        fp, implicit, little, defer_size=TAIL_DEFER_SIZE, parent_encoding=encoding, at_top_level=True
    )
    if len(tail) and tail.original_encoding[0] != implicit:
        raise NotStreamable("the data after the pixel data switches VR encoding")
    return tail


def read_encoding_of(header: Dataset) -> bool | None:
    """Whether pydicom actually read the header as implicit VR (None if no element tells)."""
    for elem in header.values():
        if isinstance(elem, RawDataElement):
            return elem.is_implicit_VR
    return None


def copy_pixel_bytes(source: BinaryIO, destination: BinaryIO | DicomIO, run: PixelRun) -> None:
    """Copy the pixel data bytes of ``run`` from ``source`` to ``destination`` in fixed-size chunks."""
    remaining = run.end - run.start
    # Most pixel data is far smaller than a chunk: a buffer of its size spares a 1 MiB allocation.
    view = memoryview(bytearray(min(COPY_CHUNK, remaining)))
    readinto = getattr(source, "readinto", None)
    source.seek(run.start)
    while remaining:
        want = min(COPY_CHUNK, remaining)
        if readinto is not None:
            got = readinto(view[:want])
            data = view[:got]
        else:
            data = source.read(want)
            got = len(data)
        if not got:
            raise InvalidDicomError("truncated: the source ended while its pixel data was copied")
        destination.write(data)
        remaining -= got


def character_encoding(ds: Dataset) -> str | list[str]:
    """The Python encodings of ``ds``'s Specific Character Set, as pydicom decodes its text with."""
    charset = ds.get("SpecificCharacterSet")
    return convert_encodings(charset) if charset else DEFAULT_ENCODING


def write_tail(destination: DicomIO, elements: list[DataElement | RawDataElement], *, whole: Dataset) -> None:
    """Encode ``elements`` as the rest of ``whole`` after its pixel data.

    ``destination`` is the DicomIO that ``dcmwrite`` wrote ``whole``'s header to: it still carries the
    encoding pydicom chose for it. The tail gets ``whole``'s character sets and original encoding, so
    pydicom takes the same decisions (copy raw values or re-encode them) as when it writes one dataset.
    """
    tail = Dataset(parent_encoding=character_encoding(whole))
    for elem in elements:
        tail[elem.tag] = elem
    tail.set_original_encoding(*whole.original_encoding, character_encoding=whole.original_character_set)
    write_dataset(destination, tail, parent_encoding=whole.get("SpecificCharacterSet", DEFAULT_ENCODING))
