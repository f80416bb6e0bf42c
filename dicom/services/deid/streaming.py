"""Byte-level pieces that let :func:`deidentify_file` copy pixel data instead of loading it.

The engine reads the header with ``dcmread(stop_before_pixels=True)``, which leaves the file positioned
at the first top-level pixel data element. :func:`plan_pixel_copy` walks that element's header (and,
when encapsulated, its item headers) without reading a single pixel, so it knows which byte range to
copy; :func:`read_tail` parses whatever follows as a dataset of its own; :func:`copy_pixel_bytes`
copies the range in fixed-size chunks and :func:`write_tail` encodes the de-identified tail exactly as
pydicom would have encoded it as part of the whole dataset. Nothing here decodes pixel data.

:class:`Part10Writer` writes the de-identified dataset as ``save_as(enforce_file_format=True)`` does,
byte for byte, but copies every element the engine left raw (as read, never converted) as its header
and its bytes, without pydicom's per-element buffers; every other element, and every dataset that
pydicom would re-encode as a whole (another encoding or character set), is written by pydicom's own
``write_data_element`` / ``write_dataset``. This is the one module that relies on how pydicom's
reader and writer treat raw elements.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from struct import Struct
from struct import error as struct_error
from typing import BinaryIO

from pydicom.charset import convert_encodings
from pydicom.charset import default_encoding as DEFAULT_ENCODING
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO, DicomIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import AMBIGUOUS_VR, EXPLICIT_VR_LENGTH_32, PersonName

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


def elements_of(ds: Dataset) -> list[tuple[int, DataElement | RawDataElement]]:
    """``ds``'s (tag, element) pairs in its key order, tags as plain ints, elements as ``ds`` stores
    them (``get_item(tag, keep_deferred=True)``: raw ones unconverted, deferred ones unread).

    The walks look at every element of every dataset; ``get_item`` would convert each key to a Tag
    and each tag comparison would go through ``BaseTag.__eq__``.
    """
    store = ds._dict
    return list(zip(map(int, store.keys()), store.values(), strict=True))


def remove_elements(ds: Dataset, tags: list[int]) -> None:
    """``del ds[tag]`` for every tag of ``tags`` (present ones), with what ``Dataset.__delitem__`` also
    does: a removed private creator resets the private block cache, removed pixel data the pixel
    cache. A file's private blocks can be hundreds of elements, each a Tag conversion in ``del``."""
    if not tags:
        return
    store = ds._dict
    doomed = set(tags)
    # Deleted by the stored key itself: a lookup by an equal int would call BaseTag.__eq__ per key.
    for key in [key for key in store if int(key) in doomed]:
        del store[key]
    if ds._private_blocks and any(tag >> 16 & 1 and 0x0010 <= tag & 0xFFFF < 0x0100 for tag in tags):
        ds._private_blocks = {}
    if any(tag in PIXEL_DATA_TAGS for tag in tags):
        ds._pixel_array = None
        ds._pixel_id = {}


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


# VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length, as pydicom's writer has them.
_LONG_VR_NAMES = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_ITEM_HEADER = {
    True: Struct("<HHL").pack(0xFFFE, 0xE000, UNDEFINED_LENGTH),
    False: Struct(">HHL").pack(0xFFFE, 0xE000, UNDEFINED_LENGTH),
}
_ITEM_END = {True: Struct("<HHL").pack(0xFFFE, 0xE00D, 0), False: Struct(">HHL").pack(0xFFFE, 0xE00D, 0)}
_SEQUENCE_END = {True: Struct("<HHL").pack(0xFFFE, 0xE0DD, 0), False: Struct(">HHL").pack(0xFFFE, 0xE0DD, 0)}
_EXPLICIT_LONG = {True: Struct("<HH2sHL"), False: Struct(">HH2sHL")}
# File meta elements pydicom fills in when they are missing or empty (validate_file_meta).
_FILE_META_VERSION = 0x00020001
_IMPLEMENTATION_CLASS_UID = 0x00020012
_IMPLEMENTATION_VERSION_NAME = 0x00020013
_MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_REQUIRED_FILE_META = (0x00020002, 0x00020003, 0x00020010)
_GROUP_LENGTH = 0x00020000
_GROUP_LENGTH_HEADER = Struct("<HH2sH").pack(0x0002, 0x0000, b"UL", 4)
# Strings pydicom writes as ASCII (padded with a space, UIs with a NUL), and text it writes in the
# dataset's character set: ASCII text is itself in the character sets listed below.
_ASCII_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
_NUMBER_FORMATS = {"US": "H", "UL": "L", "SS": "h", "SL": "l"}
_AMBIGUOUS_OR_SEQUENCE = frozenset(str(vr) for vr in AMBIGUOUS_VR) | {"SQ"}
_ASCII_ENCODINGS = frozenset(
    {"iso8859", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso_ir_126", "iso_ir_127", "iso_ir_138"}
    | {"iso_ir_144", "iso_ir_148", "iso_ir_166", "UTF8", "GB18030", "GBK", "GB2312", "euc_kr"}
)  # pydicom's Python encodings that write ASCII as ASCII (not shift_jis, ISO 2022 or iso_ir_58)
_SPECIFIC_CHARACTER_SET = 0x00080005


class Part10Writer:
    """Writes a dataset as ``ds.save_as(out, enforce_file_format=True)`` would, in two pieces.

    :meth:`header` writes the preamble, the file meta and the elements below a tag (the top-level pixel
    data, which the engine copies itself); :meth:`rest` the elements above another. Where a raw element
    can be copied as read (same VR encoding as the output, nothing to re-encode), its header and bytes
    are written directly; anything else goes through pydicom's writer, so the bytes are pydicom's
    either way. A dataset that pydicom would write otherwise than element by element (a transfer
    syntax that is not its read encoding, a changed character set, file meta elements in the dataset)
    is written by ``save_as`` itself.
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "") or ""))
        encoding: tuple[bool | None, bool | None] = (None, None)
        if syntax.is_transfer_syntax and not syntax.is_deflated:
            encoding = (syntax.is_implicit_VR, syntax.is_little_endian)
        self.fast = (
            None not in encoding
            and ds.original_encoding == encoding
            and ds.original_character_set == ds._character_set
            and not any(tag >> 16 in (0, 2) or tag in PIXEL_DATA_TAGS for tag in list(ds.keys()))
            and getattr(ds, "preamble", None) is not None
            and len(ds.preamble) == 128
        )
        self.implicit, self.little = encoding
        self._held: list[DataElement | RawDataElement] = []

    def header(self, out: BinaryIO, *, below: int | None = None) -> None:
        """Preamble, ``DICM``, file meta and the top-level elements with tags below ``below``."""
        ds = self.ds
        if not self.fast:
            # pydicom's own writer; the elements above the pixel data wait for :meth:`rest`.
            if below is not None:
                self._held = [ds.get_item(tag) for tag in list(ds.keys()) if tag > below]
                for elem in self._held:
                    del ds[elem.tag]
            try:
                self._writer = DicomIO(out)
                ds.save_as(self._writer, enforce_file_format=True)
            finally:
                for elem in self._held:
                    ds[elem.tag] = elem
            return
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = self.implicit, self.little
        buffer.write(ds.preamble)
        buffer.write(b"DICM")
        buffer.write(_file_meta_bytes(ds))
        pairs = elements_of(ds)
        if below is not None:
            pairs = [pair for pair in pairs if pair[0] < below]
        _Encoder(buffer).elements(sorted(pairs, key=_first), _dataset_encoding(ds), ds)
        out.write(buffer.getvalue())

    def rest(self, out: BinaryIO, *, above: int) -> None:
        """The top-level elements with tags above ``above``, after the copied pixel data."""
        ds = self.ds
        pairs = sorted((pair for pair in elements_of(ds) if pair[0] > above), key=_first)
        if not pairs:
            return
        if not self.fast:
            write_tail(self._writer, [ds.get_item(tag) for tag, _ in pairs], whole=ds)
            return
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = self.implicit, self.little
        _Encoder(buffer).elements(pairs, _dataset_encoding(ds), ds)
        out.write(buffer.getvalue())


def _file_meta_bytes(ds: Dataset) -> bytes:
    """The file meta group as ``dcmwrite(enforce_file_format=True)`` writes it; ``ds.file_meta`` untouched.

    pydicom writes a deep copy of the file meta whose Media Storage SOP Class and Instance UIDs follow
    the dataset's, with the elements :func:`validate_file_meta` adds when they are missing and a
    recomputed group length. Here the elements are shared and every element that differs is a new one.
    """
    source = ds.file_meta
    replaced = {}
    for meta_tag, ds_tag in (
        (_MEDIA_STORAGE_SOP_CLASS_UID, _SOP_CLASS_UID),
        (_MEDIA_STORAGE_SOP_INSTANCE_UID, _SOP_INSTANCE_UID),
    ):
        if _same_canonical_uid(source._dict.get(meta_tag), ds._dict.get(ds_tag)):
            # The same well-formed UID in both: dcmwrite would keep the file meta's element, and
            # its conversion writes back the very bytes the raw element holds.
            continue
        # Read as dcmwrite reads them (converting them, as it does), before the elements are taken.
        current = source.get(meta_tag, None)
        wanted = ds[ds_tag].value if ds_tag in ds else None
        if current is None or current.value is None or (wanted and wanted != current.value):
            replaced[meta_tag] = DataElement(meta_tag, current.VR if current is not None else "UI", wanted)
    elements = {tag: source.get_item(tag) for tag in list(source.keys()) if tag != _GROUP_LENGTH}
    elements.update(replaced)
    if any(
        tag not in elements or _is_empty(elements[tag])
        for tag in (
            _FILE_META_VERSION,
            _IMPLEMENTATION_CLASS_UID,
            _IMPLEMENTATION_VERSION_NAME,
            *_REQUIRED_FILE_META,
        )
    ):
        # pydicom fills in what it can (version, implementation) and refuses the rest: its own check.
        meta = FileMetaDataset()
        for tag, elem in elements.items():
            meta[tag] = copy.copy(elem) if tag in (_FILE_META_VERSION, _IMPLEMENTATION_CLASS_UID) else elem
        validate_file_meta(meta, enforce_standard=True)
        elements = {tag: meta.get_item(tag) for tag in list(meta.keys())}
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    encoder = _Encoder(buffer)
    if source.original_encoding == (False, True) and source.original_character_set == source._character_set:
        encoder.elements(sorted(elements.items(), key=_first), DEFAULT_ENCODING, None)
    else:
        meta = FileMetaDataset()
        for tag, elem in elements.items():
            meta[tag] = elem
        write_dataset(buffer, meta)
    group = buffer.getvalue()
    return _GROUP_LENGTH_HEADER + _U32[True].pack(len(group)) + group


def _first(pair: tuple) -> int:
    return pair[0]


def _dataset_encoding(ds: Dataset):
    """The character set pydicom's ``write_dataset`` encodes a top-level dataset's text in."""
    return (
        ds.get("SpecificCharacterSet", DEFAULT_ENCODING)
        if _SPECIFIC_CHARACTER_SET in ds
        else DEFAULT_ENCODING
    )


def _ascii_safe(encodings) -> bool:
    """Whether pydicom encodes ASCII text as itself in ``encodings`` (no ISO 2022 escapes)."""
    if not encodings:
        return True
    if isinstance(encodings, str):
        encodings = [encodings]
    try:
        converted = convert_encodings(list(encodings))
    except LookupError:
        return False
    # pydicom encodes with the first encoding that can: ASCII text always fits the first of these.
    return bool(converted) and converted[0] in _ASCII_ENCODINGS


def _ascii_bytes(value, padding: bytes) -> bytes | None:
    """An ASCII string (or list of them) as pydicom writes it, padded to even length; None otherwise."""
    if value.__class__ is not str and not isinstance(value, str):
        if not isinstance(value, MultiValue | list | tuple) or not all(
            isinstance(part, str) for part in value
        ):
            return None
        value = "\\".join(value)
    if not value.isascii():
        return None
    encoded = value.encode("ascii")
    return encoded + padding if len(encoded) % 2 else encoded


_CANONICAL_UID = re.compile(rb"[0-9]+(\.[0-9]+)*\x00?")


def _same_canonical_uid(first, second) -> bool:
    """Whether a raw file meta UI element holds one UID written as pydicom writes one (digits and
    dots, one NUL when its length is odd) and the dataset element (raw or converted) the same UID."""
    if not (
        first.__class__ is RawDataElement
        and first.VR == "UI"
        and first.value.__class__ is bytes
        and len(first.value) % 2 == 0
        and _CANONICAL_UID.fullmatch(first.value) is not None
    ):
        return False
    if second.__class__ is RawDataElement:
        # dcmwrite's read of it converts it to what it holds: the same bytes, as UI.
        return second.VR in ("UI", None) and second.value == first.value
    return (
        second.__class__ is DataElement
        and second.VR == "UI"
        and isinstance(second.value, str)
        and second.value == first.value.rstrip(b"\x00").decode("ascii")
    )


def _is_empty(elem: DataElement | RawDataElement) -> bool:
    if elem.__class__ is RawDataElement:
        return not elem.value
    return elem.is_empty


class _Encoder:
    """Encodes datasets into a DicomBytesIO as pydicom's ``write_dataset`` does, byte for byte.

    Raw elements in the output's VR encoding are their header and bytes; ASCII strings and empty values
    of the engine's own elements are encoded here as pydicom's writers encode them; everything else
    (and every dataset pydicom re-encodes as a whole) is written by pydicom.
    """

    def __init__(self, fp: DicomBytesIO) -> None:
        self.fp = fp
        self.implicit = fp.is_implicit_VR
        self.little = little = fp.is_little_endian
        self.encoding = (self.implicit, little)
        self.tag_length = _TAG_LENGTH[little]
        self.short = _EXPLICIT[little]
        self.long = _EXPLICIT_LONG[little]
        self.u32 = _U32[little]
        order = "<" if little else ">"
        self.numbers = {vr: Struct(order + code).pack for vr, code in _NUMBER_FORMATS.items()}

    def dataset(self, ds: Dataset, parent_encoding) -> None:
        # pydicom re-encodes a dataset read otherwise (or made from scratch) as a whole: ambiguous VRs
        # corrected (in nested items too), raw values converted. One made of plain converted elements
        # (an item the engine built) has nothing to correct or convert: it is written element by element.
        own_charset = _SPECIFIC_CHARACTER_SET in ds._dict
        # Dataset._character_set, without a KeyError raised and caught for every item without one.
        character_set = ds._character_set if own_charset else ds._parent_encoding
        if (ds.original_encoding != self.encoding or ds.original_character_set != character_set) and not all(
            elem.__class__ is DataElement and elem.VR not in _AMBIGUOUS_OR_SEQUENCE
            for _, elem in elements_of(ds)
        ):
            write_dataset(self.fp, ds, parent_encoding=parent_encoding)
            return
        if own_charset:
            parent_encoding = ds.get("SpecificCharacterSet", parent_encoding)
        self.elements(sorted(elements_of(ds), key=_first), parent_encoding, ds)

    def elements(self, pairs, encodings, ds: Dataset | None) -> None:
        """Write the (tag, element) ``pairs`` (sorted) of ``ds``; text in ``encodings``.

        An element ``ds`` holds unread (deferred) is read first, as ``write_dataset``'s ``get_item``
        reads it."""
        fp = self.fp
        write = fp.write
        implicit = self.implicit
        tag_length, short, long = self.tag_length.pack, self.short.pack, self.long.pack
        text_ascii = None  # whether ASCII text encodes as itself in ``encodings``, decided once
        converted = None  # ``encodings`` as Python codecs, as pydicom's writers receive them
        pack_number = self.numbers
        for tag, elem in pairs:
            if not tag & 0xFFFF and tag >> 16 > 6:
                continue  # retired group lengths: pydicom does not write them either
            if elem.__class__ is RawDataElement and elem.value is None and ds is not None:
                elem = ds.get_item(tag)
            if elem.__class__ is RawDataElement:
                value = elem.value
                vr = elem.VR
                if value is None or elem.length == UNDEFINED_LENGTH or elem.is_implicit_VR != implicit:
                    write_data_element(fp, elem, encodings)
                    continue
            elif elem.VR == "SQ" and not elem.is_buffered:
                self.sequence(elem, encodings)
                continue
            elif elem.is_buffered or elem.is_undefined_length:
                write_data_element(fp, elem, encodings)
                continue
            else:
                vr = elem.VR
                value = elem.value
                if value is None or (value.__class__ is str and not value):
                    value = b""
                elif vr == "PN" and value.__class__ is PersonName:
                    # write_PN: the name encoded by PersonName itself, padded with a space.
                    if converted is None:
                        converted = convert_encodings(encodings or [DEFAULT_ENCODING])
                    value = value.encode(converted) if value else b""
                    if len(value) % 2:
                        value += b" "
                elif vr in _NUMBER_FORMATS and value.__class__ is int:
                    try:
                        value = pack_number[vr](value)
                    except struct_error:
                        write_data_element(fp, elem, encodings)
                        continue
                elif vr in _ASCII_STRING_VRS or vr in _TEXT_VRS:
                    if vr in _TEXT_VRS:
                        if text_ascii is None:
                            text_ascii = _ascii_safe(encodings)
                        if not text_ascii:
                            write_data_element(fp, elem, encodings)
                            continue
                    value = _ascii_bytes(value, b"\0" if vr == "UI" else b" ")
                    if value is None:
                        write_data_element(fp, elem, encodings)
                        continue
                else:
                    write_data_element(fp, elem, encodings)
                    continue
                if not implicit and len(vr) != 2:
                    write_data_element(fp, elem, encodings)  # pydicom refuses an ambiguous VR
                    continue
            if implicit:
                write(tag_length(tag >> 16, tag & 0xFFFF, len(value)))
            elif vr in _LONG_VR_NAMES:
                write(long(tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)))
            elif len(value) <= 0xFFFF:
                write(short(tag >> 16, tag & 0xFFFF, vr.encode(), len(value)))
            else:
                write_data_element(fp, elem, encodings)  # pydicom writes it as UN, with a warning
                continue
            write(value)

    def sequence(self, elem: DataElement, encodings) -> None:
        fp = self.fp
        tag = elem.tag
        if self.implicit:
            fp.write(self.tag_length.pack(tag >> 16, tag & 0xFFFF, UNDEFINED_LENGTH))
        else:
            fp.write(self.long.pack(tag >> 16, tag & 0xFFFF, b"SQ", 0, UNDEFINED_LENGTH))
        start = fp.tell()
        items = elem.value
        if items:
            item_encodings = convert_encodings(encodings or [DEFAULT_ENCODING])
            for item in items:
                fp.write(_ITEM_HEADER[self.little])
                item_start = fp.tell()
                self.dataset(item, item_encodings)
                if getattr(item, "is_undefined_length_sequence_item", False):
                    fp.write(_ITEM_END[self.little])
                else:
                    self._patch(item_start - 4, fp.tell() - item_start)
        if elem.is_undefined_length:
            fp.write(_SEQUENCE_END[self.little])
        else:
            self._patch(start - 4, fp.tell() - start)

    def _patch(self, at: int, length: int) -> None:
        fp = self.fp
        end = fp.tell()
        fp.seek(at)
        fp.write(self.u32.pack(length))
        fp.seek(end)
