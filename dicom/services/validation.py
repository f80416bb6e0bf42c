"""Structural validation of an uploaded DICOM Part 10 file in one streaming walk.

``pydicom.dcmread`` silently accepts a file cut short inside a value or the pixel data, so every upload
goes through :func:`validate_dicom_file` first. The walk reads element headers only, checks that each
declared length fits in its container (the file, or an enclosing defined-length sequence or item),
follows sequences with an explicit stack (no recursion, so nesting depth is bounded by ``max_depth``
rather than by Python's stack), checks native pixel data against the image geometry and encapsulated
pixel data for its item structure, and never reads or decodes pixel values. The file is memory-mapped,
so a 500 MB upload costs page-cache, not Python memory. The header values the service needs are kept
as raw bytes on the way and handed back as a pydicom ``Dataset`` that converts them exactly as
``dcmread`` would, so the upload path does not parse the file twice.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from struct import Struct

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import Tag

from dicom.services.errors import DeflateBombError, InvalidDicomError

__all__ = ["ValidatedFile", "validate_dicom_file"]

UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
SPECIFIC_CHARACTER_SET = 0x00080005
TRANSFER_SYNTAX_UID = 0x00020010
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_DATA_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})

# Top-level attributes the native pixel data check needs, read whatever the caller wants.
SAMPLES_PER_PIXEL = 0x00280002
PHOTOMETRIC_INTERPRETATION = 0x00280004
NUMBER_OF_FRAMES = 0x00280008
ROWS = 0x00280010
COLUMNS = 0x00280011
BITS_ALLOCATED = 0x00280100
GEOMETRY_TAGS = frozenset(
    {SAMPLES_PER_PIXEL, PHOTOMETRIC_INTERPRETATION, NUMBER_OF_FRAMES, ROWS, COLUMNS, BITS_ALLOCATED}
)

# File meta values are small (UIDs, AE titles); a huge one is an attack or garbage, not a file.
MAX_FILE_META_VALUE = 64 * 1024
# Inflated datasets up to this size stay in memory; beyond it they spill to an anonymous temp file.
INFLATE_IN_MEMORY = 8 * 1024 * 1024
INFLATE_READ_CHUNK = 256 * 1024
INFLATE_OUTPUT_CHUNK = 1024 * 1024

# VRs whose explicit encoding has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
KNOWN_VRS = LONG_VRS | {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
    b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
}  # fmt: skip

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
# Deflated Explicit VR LE and the two JPIP "Referenced Deflate" syntaxes deflate the whole dataset.
DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"})
# Explicit VR LE datasets whose pixel data (if any) is referenced elsewhere, not stored.
EXPLICIT_LE_REFERENCED = frozenset({"1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.4.204"})
# Every encapsulated syntax: explicit VR LE with encapsulated pixel data. Deflated Image Frame
# Compression (1.2.840.10008.1.2.8.1) deflates each frame, not the dataset, so it belongs here.
ENCAPSULATED = frozenset(
    str(uid)
    for uid in pydicom.uid.AllTransferSyntaxes
    if uid.is_encapsulated and str(uid) not in DEFLATED | EXPLICIT_LE_REFERENCED
) | frozenset(
    [f"1.2.840.10008.1.2.4.{n}" for n in (52, 53, 54, 55, 56, 58, 59, 60, 61, 62, 63, 64, 65, 66)]
    + ["1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"]
    + ["1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.8.1"]
)

_LE_TAG_LENGTH = Struct("<HHL")
_BE_TAG_LENGTH = Struct(">HHL")
_LE_EXPLICIT = Struct("<HH2sH")
_BE_EXPLICIT = Struct(">HH2sH")
_LE_U32 = Struct("<L")
_BE_U32 = Struct(">L")


@dataclass(frozen=True)
class ValidatedFile:
    """What the walk learnt about a structurally sound Part 10 file."""

    transfer_syntax_uid: str
    # Top-level elements in ``wanted_tags`` plus Specific Character Set, as pydicom raw elements that
    # convert lazily exactly as dcmread would; ``header.file_meta`` is set.
    header: pydicom.Dataset
    file_meta: FileMetaDataset
    has_pixel_data: bool
    size: int
    dataset_offset: int


def _tag_name(tag: int) -> str:
    """``(gggg,eeee) Keyword``: names the element without its value (values may be patient data)."""
    try:
        keyword = keyword_for_tag(tag)
    except Exception:  # a name is decoration; never let it hide the real error
        keyword = ""
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{text} {keyword}" if keyword else text


def _looks_like_vr(vr: bytes) -> bool:
    return 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B


class _Frame:
    """One open container of the walk: a dataset (top level or an item) or a sequence."""

    __slots__ = ("bound", "end", "implicit", "is_sequence", "tag", "value_start", "wanted")

    def __init__(
        self,
        *,
        is_sequence: bool,
        end: int | None,
        bound: int,
        implicit: bool,
        tag: int = 0,
        value_start: int = 0,
        wanted: bool = False,
    ) -> None:
        self.is_sequence = is_sequence
        self.end = end  # None: undefined length, closed by a delimiter
        # Where the container must end at the latest: its own end, or (delimited) its parent's bound.
        self.bound = end if end is not None else bound
        self.implicit = implicit
        self.tag = tag  # the sequence's tag, for error details
        self.value_start = value_start
        self.wanted = wanted  # a top-level wanted sequence whose bytes go into the header


class _DatasetWalk:
    """Iterative walk over an encoded dataset held in ``buf`` (bytes or an mmap) from ``start``."""

    def __init__(
        self,
        buf: bytes | mmap.mmap,
        start: int,
        *,
        implicit: bool,
        little: bool,
        wanted: frozenset[int],
        max_depth: int,
        where: str,
    ) -> None:
        self.buf = buf
        self.start = start
        self.buf_end = len(buf)
        self.implicit = implicit
        self.little = little
        self.wanted = wanted
        self.max_depth = max_depth
        self.where = where  # "file" or "inflated dataset", for error details
        self.raw: dict[int, RawDataElement] = {}
        self.geometry: dict[int, bytes] = {}
        self.pixel: tuple[int, int, bool] | None = None  # tag, length, encapsulated

    def _truncated(self, what: str, needed: int, pos: int, limit: int, frame: _Frame) -> InvalidDicomError:
        left = max(limit - pos, 0)
        if frame.bound == self.buf_end:
            container = f"remain in the {self.where}"
        else:
            container = "remain in its enclosing item" if not frame.is_sequence else "remain in its sequence"
        return InvalidDicomError(f"truncated: {what} declares {needed} bytes but only {left} {container}")

    def _container(self, limit: int) -> str:
        return f"the {self.where}" if limit == self.buf_end else "its enclosing item or sequence"

    def _detect_implicit(self, pos: int, limit: int, assumed: bool, *, top_level: bool) -> bool:
        """Mirror pydicom's ``_is_implicit_vr``: some writers switch VR encoding per dataset."""
        if not top_level and assumed:
            return True
        if pos + 6 > limit:
            return assumed
        vr = self.buf[pos + 4 : pos + 6]
        found_implicit = not _looks_like_vr(vr)
        if found_implicit == assumed:
            return assumed
        tag_struct = _LE_TAG_LENGTH if self.little else _BE_TAG_LENGTH
        group, elem, _ = tag_struct.unpack_from(self.buf, pos)
        if (group << 16 | elem) == ITEM_DELIMITER:
            return assumed
        return found_implicit

    def walk(self) -> None:
        buf = self.buf
        buf_end = self.buf_end
        little = self.little
        tag_length = _LE_TAG_LENGTH if little else _BE_TAG_LENGTH
        explicit_struct = _LE_EXPLICIT if little else _BE_EXPLICIT
        u32 = _LE_U32 if little else _BE_U32
        wanted = self.wanted
        geometry = self.geometry

        top = _Frame(is_sequence=False, end=None, bound=buf_end, implicit=self.implicit)
        top.implicit = self._detect_implicit(self.start, buf_end, self.implicit, top_level=True)
        stack = [top]
        depth = 0  # number of open sequences
        pos = self.start
        if pos >= buf_end:
            raise InvalidDicomError(f"no dataset after the file meta information in the {self.where}")

        while True:
            frame = stack[-1]
            limit = frame.bound

            if frame.is_sequence:
                if frame.end is not None and pos == frame.end:
                    stack.pop()
                    depth -= 1
                    continue
                if pos + 8 > limit:
                    if frame.end is None:
                        raise InvalidDicomError(
                            f"truncated: sequence {_tag_name(frame.tag)} has no sequence delimiter "
                            f"before the end of {self._container(limit)}"
                        )
                    raise self._truncated(
                        f"an item header in sequence {_tag_name(frame.tag)}", 8, pos, limit, frame
                    )
                group, elem, length = tag_length.unpack_from(buf, pos)
                tag = group << 16 | elem
                pos += 8
                if tag == ITEM:
                    if length == UNDEFINED_LENGTH:
                        item_end = None
                    else:
                        item_end = pos + length
                        if item_end > limit:
                            raise self._truncated(
                                f"an item of sequence {_tag_name(frame.tag)}", length, pos, limit, frame
                            )
                    implicit = self._detect_implicit(
                        pos, limit if item_end is None else item_end, frame.implicit, top_level=False
                    )
                    stack.append(_Frame(is_sequence=False, end=item_end, bound=limit, implicit=implicit))
                    continue
                if tag == SEQUENCE_DELIMITER and (frame.end is None or pos == frame.end):
                    stack.pop()
                    depth -= 1
                    if frame.wanted:
                        self._keep(frame.tag, "SQ", UNDEFINED_LENGTH, frame.value_start, pos, frame.implicit)
                    continue
                raise InvalidDicomError(
                    f"sequence {_tag_name(frame.tag)} holds {_tag_name(tag)} where an item was expected"
                )

            # A dataset: the top level or an item.
            if pos == limit:
                if frame.end is None:
                    if len(stack) == 1:
                        break
                    raise InvalidDicomError(
                        f"truncated: an item of sequence {_tag_name(stack[-2].tag)} has no item delimiter "
                        f"before the end of {self._container(limit)}"
                    )
                stack.pop()
                continue
            element_start = pos
            if pos + 8 > limit:
                raise InvalidDicomError(
                    f"truncated: {limit - pos} stray bytes where an element header (8 bytes or more) "
                    f"was expected at offset {pos}"
                )
            implicit = frame.implicit
            if implicit:
                group, elem, length = tag_length.unpack_from(buf, pos)
                vr = None
                pos += 8
            else:
                group, elem, vr, length = explicit_struct.unpack_from(buf, pos)
                pos += 8
                if vr in LONG_VRS:
                    if pos + 4 > limit:
                        raise InvalidDicomError(
                            f"truncated: element {_tag_name(group << 16 | elem)} header is cut short"
                        )
                    length = u32.unpack_from(buf, pos)[0]
                    pos += 4
                elif not (b"AA" <= vr <= b"ZZ"):
                    # pydicom (assume_implicit_vr_switch) reads such an element as implicit VR.
                    group, elem, length = tag_length.unpack_from(buf, element_start)
                    vr = None
            tag = group << 16 | elem

            if tag == ITEM_DELIMITER:
                if frame.end is None and len(stack) > 1:
                    stack.pop()
                    continue
                if frame.end is not None and pos == frame.end:
                    stack.pop()  # a redundant delimiter closing a defined-length item: harmless
                    continue
                raise InvalidDicomError(f"unexpected item delimiter at offset {element_start}")
            if group == 0xFFFE:
                raise InvalidDicomError(
                    f"unexpected {_tag_name(tag)} at offset {element_start} outside a sequence"
                )

            top_level = len(stack) == 1

            if length != UNDEFINED_LENGTH:
                value_end = pos + length
                if value_end > limit:
                    raise self._truncated(f"element {_tag_name(tag)}", length, pos, limit, frame)
                if vr == b"SQ" or (vr is None and self._implicit_is_sequence(tag, pos, look_ahead=False)):
                    depth += 1
                    if depth > self.max_depth:
                        raise InvalidDicomError(f"sequence nesting deeper than {self.max_depth} levels")
                    if top_level and tag in wanted:
                        self._keep(tag, vr, length, pos, value_end, implicit)
                    stack.append(
                        _Frame(is_sequence=True, end=value_end, bound=limit, implicit=implicit, tag=tag)
                    )
                    continue
                if top_level:
                    if tag in wanted or tag == SPECIFIC_CHARACTER_SET:
                        self._keep(tag, vr, length, pos, value_end, implicit)
                    if tag in GEOMETRY_TAGS:
                        geometry[tag] = bytes(buf[pos:value_end])
                    elif tag in PIXEL_DATA_TAGS:
                        self.pixel = (tag, length, False)
                pos = value_end
                continue

            # Undefined length: a sequence, or encapsulated data closed by a sequence delimiter.
            is_sequence = vr in (b"SQ", b"UN") or (
                vr is None and self._implicit_is_sequence(tag, pos, look_ahead=True)
            )
            if is_sequence:
                depth += 1
                if depth > self.max_depth:
                    raise InvalidDicomError(f"sequence nesting deeper than {self.max_depth} levels")
                stack.append(
                    _Frame(
                        is_sequence=True,
                        end=None,
                        bound=limit,
                        implicit=implicit,
                        tag=tag,
                        value_start=pos,
                        wanted=top_level and tag in wanted,
                    )
                )
                continue
            value_start = pos
            pos = self._skip_encapsulated(tag, pos, limit, frame, first_is_offset_table=tag == PIXEL_DATA)
            if top_level:
                if tag in wanted:
                    self._keep(tag, vr, UNDEFINED_LENGTH, value_start, pos, implicit)
                if tag in PIXEL_DATA_TAGS:
                    self.pixel = (tag, pos - value_start, True)

        self.implicit = top.implicit

    def _implicit_is_sequence(self, tag: int, pos: int, *, look_ahead: bool) -> bool:
        """Implicit VR gives no VR: use the dictionary, else (undefined length) look for an item tag.

        This is pydicom's rule; a defined-length private element stays opaque bytes, as in dcmread.
        """
        try:
            return dictionary_VR(tag) == "SQ"
        except KeyError:
            if not look_ahead or pos + 8 > self.buf_end:
                return False
            tag_length = _LE_TAG_LENGTH if self.little else _BE_TAG_LENGTH
            group, elem, _ = tag_length.unpack_from(self.buf, pos)
            return (group << 16 | elem) == ITEM

    def _skip_encapsulated(
        self, tag: int, pos: int, limit: int, frame: _Frame, *, first_is_offset_table: bool
    ) -> int:
        """Walk the items of an undefined-length non-sequence value up to its sequence delimiter."""
        buf = self.buf
        tag_length = _LE_TAG_LENGTH if self.little else _BE_TAG_LENGTH
        kind = (
            "encapsulated pixel data"
            if tag in PIXEL_DATA_TAGS
            else f"undefined-length element {_tag_name(tag)}"
        )
        items = 0
        while True:
            if pos + 8 > limit:
                raise InvalidDicomError(
                    f"truncated: {kind} has no sequence delimiter before the end of {self._container(limit)}"
                )
            group, elem, length = tag_length.unpack_from(buf, pos)
            item_tag = group << 16 | elem
            pos += 8
            if item_tag == SEQUENCE_DELIMITER:
                break
            if item_tag != ITEM:
                if items == 0 and first_is_offset_table:
                    raise InvalidDicomError(f"{kind} does not start with a Basic Offset Table item")
                raise InvalidDicomError(f"{kind} holds {_tag_name(item_tag)} where an item was expected")
            if length == UNDEFINED_LENGTH:
                raise InvalidDicomError(f"{kind} has an item of undefined length")
            if pos + length > limit:
                what = (
                    "its Basic Offset Table" if items == 0 and first_is_offset_table else f"fragment {items}"
                )
                raise self._truncated(f"{kind} {what}", length, pos, limit, frame)
            pos += length
            items += 1
        if first_is_offset_table and items == 0:
            raise InvalidDicomError(f"{kind} has no Basic Offset Table item")
        return pos

    def _keep(
        self, tag: int, vr: bytes | str | None, length: int, start: int, end: int, implicit: bool
    ) -> None:
        if isinstance(vr, bytes):
            try:
                vr = vr.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidDicomError(
                    f"element {_tag_name(tag)} has a malformed value representation"
                ) from None
        self.raw[tag] = RawDataElement(
            Tag(tag), vr, length, bytes(self.buf[start:end]), start, implicit, self.little
        )

    def check_pixel_data(self) -> None:
        """Image attributes need pixel data, and native pixel data must hold every frame they declare."""
        if self.pixel is None:
            # An image whose pixel data is missing is most often an upload cut at an element boundary.
            if {ROWS, COLUMNS, BITS_ALLOCATED} <= self.geometry.keys():
                raise InvalidDicomError(
                    "truncated: the dataset describes an image (Rows, Columns, Bits Allocated) "
                    "but has no pixel data"
                )
            return
        tag, length, encapsulated = self.pixel
        if encapsulated:
            return
        rows = self._us(ROWS)
        columns = self._us(COLUMNS)
        if rows is None or columns is None:
            return
        bits = self._us(BITS_ALLOCATED)
        if bits is None:
            bits = {FLOAT_PIXEL_DATA: 32, DOUBLE_FLOAT_PIXEL_DATA: 64}.get(tag)
            if bits is None:
                return
        samples = self._us(SAMPLES_PER_PIXEL) or 1
        frames = self._frames()
        pixels = rows * columns * samples * frames
        if bits == 1:
            expected = (pixels + 7) // 8
        else:
            expected = pixels * ((bits + 7) // 8)
            photometric = self.geometry.get(PHOTOMETRIC_INTERPRETATION, b"").strip(b" \0")
            if photometric == b"YBR_FULL_422" and samples == 3:
                # Two luminance samples share one pair of chroma samples (PS3.3 C.7.6.3.1.2).
                expected = expected // 3 * 2
        if length < expected:
            raise InvalidDicomError(
                f"native pixel data is {length} bytes, expected at least {expected} for "
                f"{rows}x{columns}x{samples} {bits}-bit x{frames} frame{'s' if frames != 1 else ''}"
            )

    def _us(self, tag: int) -> int | None:
        value = self.geometry.get(tag)
        if value is None or len(value) != 2:
            return None
        return int.from_bytes(value, "little" if self.little else "big")

    def _frames(self) -> int:
        value = self.geometry.get(NUMBER_OF_FRAMES)
        if not value:
            return 1
        try:
            frames = int(value.decode("ascii").strip(" \0"))
        except (UnicodeDecodeError, ValueError):
            return 1
        return frames if frames > 0 else 1  # pydicom treats 0 or absent as one frame


def _read_file_meta(buf: bytes | mmap.mmap, size: int) -> tuple[FileMetaDataset, int]:
    """Walk group 0002 (explicit VR LE) after the preamble; its group length is not trusted."""
    raw: dict[int, RawDataElement] = {}
    pos = 132
    while pos + 8 <= size:
        group, elem, vr, length = _LE_EXPLICIT.unpack_from(buf, pos)
        if group != 0x0002:
            break
        tag = group << 16 | elem
        header = 8
        if vr in LONG_VRS:
            if pos + 12 > size:
                raise InvalidDicomError(f"truncated: file meta element {_tag_name(tag)} header is cut short")
            length = _LE_U32.unpack_from(buf, pos + 8)[0]
            header = 12
        elif vr not in KNOWN_VRS:
            raise InvalidDicomError(f"file meta element {_tag_name(tag)} is not explicit VR little endian")
        if length == UNDEFINED_LENGTH or length > MAX_FILE_META_VALUE:
            raise InvalidDicomError(f"file meta element {_tag_name(tag)} has an implausible length")
        value_start = pos + header
        value_end = value_start + length
        if value_end > size:
            raise InvalidDicomError(
                f"truncated: file meta element {_tag_name(tag)} declares {length} bytes "
                f"but only {size - value_start} remain in the file"
            )
        raw[tag] = RawDataElement(
            Tag(tag), vr.decode("ascii"), length, bytes(buf[value_start:value_end]), value_start, False, True
        )
        pos = value_end
    if pos < size and pos + 8 > size and size - pos >= 2 and buf[pos : pos + 2] == b"\x02\x00":
        raise InvalidDicomError("truncated: the file meta information is cut short")
    if TRANSFER_SYNTAX_UID not in raw:
        raise InvalidDicomError("file meta information has no Transfer Syntax UID (0002,0010)")
    file_meta = FileMetaDataset(raw)
    file_meta.set_original_encoding(is_implicit_vr=False, is_little_endian=True, character_encoding="iso8859")
    return file_meta, pos


def _check_inflated_size(buf: mmap.mmap, start: int, max_inflated_size: int) -> None:
    """Inflate the whole stream, discarding the output, and raise if it exceeds the bound."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    pos = start
    end = len(buf)
    while not inflater.eof:
        data = inflater.unconsumed_tail
        if not data and pos < end:
            data = buf[pos : pos + INFLATE_READ_CHUNK]
            pos += len(data)
        out = inflater.decompress(data, INFLATE_OUTPUT_CHUNK)
        if not out and not data:
            return  # a truncated stream: the storing pass reports it
        total += len(out)
        if total > max_inflated_size:
            raise DeflateBombError(f"deflated dataset inflates beyond {max_inflated_size} bytes")


def _inflate(buf: mmap.mmap, start: int, max_inflated_size: int) -> bytes | mmap.mmap:
    """Inflate the raw deflate stream after the file meta, never beyond ``max_inflated_size`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    chunks: list[bytes] = []
    spill = None
    total = 0
    pos = start
    end = len(buf)
    try:
        while not inflater.eof:
            data = inflater.unconsumed_tail
            if not data and pos < end:
                data = buf[pos : pos + INFLATE_READ_CHUNK]
                pos += len(data)
            # Bounded output per call; with no input left this drains what the inflater still holds.
            out = inflater.decompress(data, INFLATE_OUTPUT_CHUNK)
            if not out and not data and not inflater.eof:
                raise InvalidDicomError("truncated: the deflated dataset ends before its final block")
            total += len(out)
            if total > max_inflated_size:
                raise DeflateBombError(f"deflated dataset inflates beyond {max_inflated_size} bytes")
            if spill is not None:
                spill.write(out)
            else:
                chunks.append(out)
                if total > INFLATE_IN_MEMORY:
                    # Before writing hundreds of MB to disk, check the bound by inflating without
                    # keeping anything: a bomb is refused at inflate speed, with nothing written.
                    _check_inflated_size(buf, start, max_inflated_size)
                    spill = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, or by its mmap's owner
                    for chunk in chunks:
                        spill.write(chunk)
                    chunks = []
    except zlib.error as exc:
        if spill is not None:
            spill.close()
        raise InvalidDicomError("the deflated dataset is not a valid deflate stream") from exc
    except BaseException:
        if spill is not None:
            spill.close()
        raise
    if spill is None:
        return b"".join(chunks)
    spill.flush()
    try:
        return mmap.mmap(spill.fileno(), 0, access=mmap.ACCESS_READ)
    finally:
        spill.close()  # the mapping keeps the unlinked file's pages alive


def validate_dicom_file(
    path: str | os.PathLike[str],
    *,
    wanted_tags: Collection[int],
    max_inflated_size: int,
    max_depth: int = 16,
) -> ValidatedFile:
    """Check that ``path`` is a complete, well-formed DICOM Part 10 file, in one walk over its bytes.

    Reads element headers only (values of top-level ``wanted_tags``, Specific Character Set and the
    image geometry are copied; everything else is skipped), never decodes pixel data and memory-maps the
    file instead of reading it. A deflated dataset is inflated in bounded chunks into memory or a temp
    file. No side effects beyond that temp file, which is gone when the call returns.

    Raises :class:`InvalidDicomError` for anything that is not a complete Part 10 file (the detail
    names tags and offsets, never values) and :class:`DeflateBombError` when a deflated dataset would
    inflate beyond ``max_inflated_size`` bytes.
    """
    wanted = frozenset(int(tag) for tag in wanted_tags)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise InvalidDicomError("file is empty")
        if size < 132:
            raise InvalidDicomError("not a DICOM file: shorter than the 128-byte preamble and 'DICM' prefix")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[128:132] != b"DICM":
                raise InvalidDicomError("not a DICOM file: no 'DICM' prefix after the 128-byte preamble")
            file_meta, dataset_offset = _read_file_meta(buf, size)
            ts_bytes = file_meta[TRANSFER_SYNTAX_UID].value
            ts_uid = str(ts_bytes).strip(" \0")
            if dataset_offset >= size:
                raise InvalidDicomError("no dataset after the file meta information")
            return _validate_dataset(
                buf,
                size=size,
                dataset_offset=dataset_offset,
                file_meta=file_meta,
                ts_uid=ts_uid,
                wanted=wanted,
                max_inflated_size=max_inflated_size,
                max_depth=max_depth,
            )


def _validate_dataset(
    buf: mmap.mmap,
    *,
    size: int,
    dataset_offset: int,
    file_meta: FileMetaDataset,
    ts_uid: str,
    wanted: frozenset[int],
    max_inflated_size: int,
    max_depth: int,
) -> ValidatedFile:
    implicit, little = False, True
    if ts_uid == IMPLICIT_LE:
        implicit = True
    elif ts_uid == EXPLICIT_BE:
        little = False
    elif ts_uid not in DEFLATED | ENCAPSULATED | EXPLICIT_LE_REFERENCED and ts_uid != EXPLICIT_LE:
        # The value is the file's, not ours to repeat: the detail says what is wrong, not what it is.
        raise InvalidDicomError("the file meta names a transfer syntax the service does not know")

    inflated: bytes | mmap.mmap | None = None
    if ts_uid in DEFLATED:
        inflated = _inflate(buf, dataset_offset, max_inflated_size)
        data, start, where = inflated, 0, "inflated dataset"
    else:
        data, start, where = buf, dataset_offset, "file"
    try:
        walk = _DatasetWalk(
            data,
            start,
            implicit=implicit,
            little=little,
            wanted=wanted,
            max_depth=max_depth,
            where=where,
        )
        walk.walk()
        walk.check_pixel_data()
    finally:
        if isinstance(inflated, mmap.mmap):
            inflated.close()

    header = pydicom.Dataset(walk.raw)
    charset_raw = walk.raw.get(SPECIFIC_CHARACTER_SET)
    encoding: str | list[str] = "iso8859"
    if charset_raw is not None:
        encoding = convert_encodings(header.SpecificCharacterSet)
    header.set_original_encoding(walk.implicit, little, encoding)
    header.file_meta = file_meta
    return ValidatedFile(
        transfer_syntax_uid=ts_uid,
        header=header,
        file_meta=file_meta,
        has_pixel_data=walk.pixel is not None,
        size=size,
        dataset_offset=dataset_offset,
    )
