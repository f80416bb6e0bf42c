"""Byte-level builders for DICOM test files, including broken and hostile ones.

pydicom will not write a truncated file, a deflate bomb or a dataset nested 10,000 sequences deep, so
these helpers encode elements by hand (explicit VR little endian unless stated). Large files are written
streaming or sparse, so a test never holds them in memory.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable

from pydicom.uid import generate_uid

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def _pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2:
        return value + (b"\0" if vr in {"UI", "OB", "UN"} else b" ")
    return value


def element(tag: int, vr: str, value: bytes | str | int) -> bytes:
    """One explicit VR little endian element with a defined length (US values given as int)."""
    if isinstance(value, int):
        value = struct.pack("<H", value)
    elif isinstance(value, str):
        value = value.encode("ascii")
    value = _pad(value, vr)
    return element_header(tag, vr, len(value)) + value


def element_header(tag: int, vr: str, length: int) -> bytes:
    """The header of an explicit VR little endian element; ``length`` may be ``UNDEFINED``."""
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHL", group, elem, vr.encode("ascii"), 0, length)
    return struct.pack("<HH2sH", group, elem, vr.encode("ascii"), length)


def item(length: int) -> bytes:
    """An item tag (FFFE,E000) with ``length`` (``UNDEFINED`` for a delimited item)."""
    return struct.pack("<HHL", 0xFFFE, 0xE000, length)


ITEM_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
SEQUENCE_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def file_meta(transfer_syntax: str, *, sop_class: str = SECONDARY_CAPTURE) -> bytes:
    """Preamble, ``DICM`` and a File Meta group (with a correct group length)."""
    body = b"".join(
        [
            element(0x00020001, "OB", b"\0\1"),
            element(0x00020002, "UI", sop_class),
            element(0x00020003, "UI", generate_uid()),
            element(0x00020010, "UI", transfer_syntax),
            element(0x00020012, "UI", "1.2.826.0.1.3680043.8.498.1"),
        ]
    )
    group_length = element_header(0x00020000, "UL", 4) + struct.pack("<L", len(body))
    return b"\0" * 128 + b"DICM" + group_length + body


def identifying_elements(*, patient_id: str = "PAT-0001", modality: str = "OT") -> bytes:
    """The few top-level elements every synthetic file carries (ascending tags)."""
    return b"".join(
        [
            element(0x00080016, "UI", SECONDARY_CAPTURE),
            element(0x00080018, "UI", generate_uid()),
            element(0x00080060, "CS", modality),
            element(0x00100020, "LO", patient_id),
            element(0x0020000D, "UI", generate_uid()),
        ]
    )


def image_elements(*, rows: int, columns: int, bits: int = 16, samples: int = 1, frames: int = 1) -> bytes:
    """Image pixel module attributes, in tag order."""
    parts = [element(0x00280002, "US", samples), element(0x00280004, "CS", "MONOCHROME2")]
    if frames != 1:
        parts.append(element(0x00280008, "IS", str(frames)))
    parts += [
        element(0x00280010, "US", rows),
        element(0x00280011, "US", columns),
        element(0x00280100, "US", bits),
        element(0x00280101, "US", bits),
        element(0x00280102, "US", bits - 1),
        element(0x00280103, "US", 0),
    ]
    return b"".join(parts)


def write_part10(
    path: str | os.PathLike[str], dataset: bytes, *, transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN
) -> None:
    """Write a Part 10 file: preamble, file meta and ``dataset`` bytes as given (not deflated)."""
    with open(path, "wb") as fh:
        fh.write(file_meta(transfer_syntax))
        fh.write(dataset)


def write_native_image(
    path: str | os.PathLike[str],
    *,
    rows: int,
    columns: int,
    bits: int = 16,
    frames: int = 1,
    pixel_bytes: int | None = None,
) -> int:
    """A native explicit VR LE image whose pixel data is ``pixel_bytes`` zero bytes (default: complete).

    The pixel data is a sparse hole made by ``truncate``, so a 500 MB file costs nothing to write.
    Returns the file size.
    """
    expected = rows * columns * (bits // 8) * frames
    length = expected if pixel_bytes is None else pixel_bytes
    header = (
        file_meta(EXPLICIT_VR_LITTLE_ENDIAN)
        + identifying_elements()
        + image_elements(rows=rows, columns=columns, bits=bits, frames=frames)
        + element_header(0x7FE00010, "OW", length + length % 2)
    )
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + length + length % 2)
    return os.path.getsize(path)


def encapsulated_pixel_data(
    fragments: Iterable[bytes], *, offset_table: bytes | None = b"", delimiter: bool = True
) -> bytes:
    """Encapsulated (7FE0,0010): Basic Offset Table item (omitted if None), fragments, delimiter."""
    parts = [element_header(0x7FE00010, "OB", UNDEFINED)]
    if offset_table is not None:
        parts += [item(len(offset_table)), offset_table]
    for fragment in fragments:
        fragment = _pad(fragment, "OB")
        parts += [item(len(fragment)), fragment]
    if delimiter:
        parts.append(SEQUENCE_DELIMITER)
    return b"".join(parts)


def write_deeply_nested(path: str | os.PathLike[str], depth: int) -> None:
    """A file whose dataset nests ``depth`` undefined-length Content Sequences, each in one item."""
    opening = element_header(0x0040A730, "SQ", UNDEFINED) + item(UNDEFINED)
    closing = ITEM_DELIMITER + SEQUENCE_DELIMITER
    innermost = element(0x0040A040, "CS", "TEXT")
    write_part10(path, identifying_elements() + opening * depth + innermost + closing * depth)


def write_deflate_bomb(path: str | os.PathLike[str], inflated_size: int) -> int:
    """A Deflated Explicit VR LE file whose dataset inflates to more than ``inflated_size`` bytes.

    The dataset holds an OB element of ``inflated_size`` zero bytes; it is compressed streaming in
    1 MiB chunks, so neither the inflated nor the deflated data is ever whole in memory. Returns the
    file size (about 1/1000 of ``inflated_size``).
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    length = inflated_size + inflated_size % 2
    chunk = bytes(1024 * 1024)
    with open(path, "wb") as fh:
        fh.write(file_meta(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN))
        fh.write(compressor.compress(identifying_elements() + element_header(0x00091010, "OB", length)))
        remaining = length
        while remaining:
            piece = chunk if remaining >= len(chunk) else chunk[:remaining]
            fh.write(compressor.compress(piece))
            remaining -= len(piece)
        fh.write(compressor.flush())
    return os.path.getsize(path)


def write_deflated(path: str | os.PathLike[str], dataset: bytes) -> None:
    """A Deflated Explicit VR LE file whose (explicit VR LE) ``dataset`` bytes are deflated."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as fh:
        fh.write(file_meta(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN))
        fh.write(compressor.compress(dataset) + compressor.flush())


def truncate_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], size: int) -> None:
    """Copy the first ``size`` bytes of ``src`` to ``dst`` (an upload cut short)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        remaining = size
        while remaining:
            block = fin.read(min(remaining, 1024 * 1024))
            if not block:
                break
            fout.write(block)
            remaining -= len(block)
