"""Pixel data for WADO-RS: frames as stored or decoded, instances transcoded, media types of syntaxes.

Plain functions on open files (no request, no response): the WADO module decides what to ask.
Frames as stored are read directly from the file (a native frame is one slice of the value; an
encapsulated frame is found through the offset tables or the fragment headers), so a frame of a
300-slice series costs one seek and one read. Decoding goes through the project's renderer
(``dicom.services.rendering.decode_frame``), which uses the pydicom plugins installed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from dicom.services.errors import DicomServiceError, FileNotFoundInServiceError
from dicom.services.rendering import (
    NoPixelDataError,
    PixelElement,
    RenderError,
    decode_frame,
    read_image_header,
)

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
LITTLE_ENDIAN_NATIVE = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN})
OCTET_STREAM = "application/octet-stream"

# PS3.18 Table 8.7.3-5: the media type of a compressed frame or bulk data value, by transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class CannotProduceError(DicomServiceError):
    """The representation asked cannot be made from what is stored (no decoder, or decoding failed)."""

    status_code = 406


@dataclass(frozen=True)
class Frames:
    """What a stored image's header says of its frames."""

    ds: Dataset
    pixels: PixelElement
    transfer_syntax: str
    count: int

    @property
    def encapsulated(self) -> bool:
        return self.pixels.length is None

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame (``BitsAllocated`` 8, 16, 32 or 64)."""
        ds = self.ds
        return int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8


def read_frames_header(fp: BinaryIO) -> Frames:
    """The header of the stored image at ``fp`` and where its pixel data lies.

    Raises FileNotFoundInServiceError (404) when the instance has no pixel data (it has no frames),
    RenderError when its header or pixel data is malformed.
    """
    try:
        ds, pixels = read_image_header(fp)
    except NoPixelDataError as exc:
        raise FileNotFoundInServiceError("this instance has no pixel data, so no frames") from exc
    transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    number = ds.get("NumberOfFrames")
    count = number if isinstance(number, int) and number > 0 else 1
    return Frames(ds=ds, pixels=pixels, transfer_syntax=transfer_syntax, count=count)


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` as 1-based frame numbers; raises DicomServiceError (400) for anything else."""
    numbers = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit() or len(piece) > 9 or int(piece) < 1:
            raise DicomServiceError("the frame list must be comma-separated frame numbers from 1")
        numbers.append(int(piece))
    if len(numbers) > 10_000:
        raise DicomServiceError("at most 10000 frames per request")
    return numbers


def check_frame_numbers(frames: Frames, numbers: Sequence[int]) -> None:
    """Raise a 404 naming the first frame number the instance does not have."""
    for number in numbers:
        if number > frames.count:
            raise FileNotFoundInServiceError(
                f"the instance has {frames.count} frame(s): there is no frame {number}"
            )


def can_decode(transfer_syntax: str) -> bool:
    """Whether an installed pydicom plugin decodes ``transfer_syntax``'s pixel data."""
    try:
        return get_decoder(UID(transfer_syntax)).is_available
    except (NotImplementedError, ValueError):
        return False


def raw_frames_as_stored(frames: Frames) -> bool:
    """Whether the stored frames can be sent as they lie: little-endian native whole bytes, or encapsulated."""
    if frames.encapsulated:
        return True
    return (
        frames.transfer_syntax in LITTLE_ENDIAN_NATIVE
        and not frames.pixels.in_dataset
        and int(frames.ds.BitsAllocated) % 8 == 0
    )


def stored_frame(fp: BinaryIO, frames: Frames, number: int) -> bytes:
    """Frame ``number`` (from 1) as stored: the native bytes, or the encapsulated codec stream."""
    pixels = frames.pixels
    if not frames.encapsulated:
        length = frames.frame_length
        fp.seek(pixels.value_offset + (number - 1) * length)
        data = fp.read(length)
        if len(data) < length:
            raise RenderError("pixel data is truncated")
        return data
    fp.seek(pixels.value_offset)
    extended = None
    if "ExtendedOffsetTable" in frames.ds and "ExtendedOffsetTableLengths" in frames.ds:
        extended = (frames.ds.ExtendedOffsetTable, frames.ds.ExtendedOffsetTableLengths)
    try:
        return get_frame(fp, number - 1, number_of_frames=frames.count, extended_offsets=extended)
    except Exception as exc:
        raise RenderError(
            f"the encapsulated pixel data cannot be split into frames ({type(exc).__name__})"
        ) from exc


def decoded_frame(fp: BinaryIO, frames: Frames, number: int) -> bytes:
    """Frame ``number`` (from 1) decoded to native little-endian bytes (colour as RGB, interleaved).

    Raises CannotProduceError when no plugin decodes it.
    """
    try:
        array, _ = decode_frame(frames.ds, frames.pixels, fp, index=number - 1)
    except RenderError as exc:
        raise CannotProduceError(f"the frame cannot be decoded: {exc.detail}") from exc
    array = np.ascontiguousarray(array)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def can_transcode(stored: str, target: str) -> bool:
    """Whether an instance stored in ``stored`` can be sent in ``target`` (itself, or Explicit VR LE)."""
    if stored == target:
        return True
    if target != EXPLICIT_VR_LITTLE_ENDIAN:
        return False
    return stored in (IMPLICIT_VR_LITTLE_ENDIAN, DEFLATED) or (
        UID(stored).is_compressed and UID(stored).is_transfer_syntax and can_decode(stored)
    )


def transcoded(fp: BinaryIO) -> bytes:
    """The Part 10 file at ``fp`` re-encoded in Explicit VR Little Endian, pixel data decompressed.

    The SOP Instance UID is kept (the instance is the same, in another encoding). Holds the one
    instance in memory. Raises CannotProduceError when it cannot be decoded.
    """
    try:
        ds = dcmread(fp)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress(generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        raise CannotProduceError(
            f"the instance cannot be transcoded to Explicit VR Little Endian ({type(exc).__name__})"
        ) from exc
    return buffer.getvalue()


def blocks(
    fp: BinaryIO, *, start: int = 0, length: int | None = None, size: int = 1 << 20
) -> Iterator[bytes]:
    """``length`` bytes of ``fp`` from ``start`` (to the end when None), a block at a time; closes ``fp``."""
    try:
        fp.seek(start)
        remaining = length
        while remaining is None or remaining > 0:
            block = fp.read(size if remaining is None else min(size, remaining))
            if not block:
                return
            if remaining is not None:
                remaining -= len(block)
            yield block
    finally:
        fp.close()
