"""The engine's policy for burned-in text, and the rewrite of pixel data that Clean Pixel Data needs.

Every file with pixel data is scanned (:mod:`dicom.services.pixel_text`), whatever its modality and
whatever Burned In Annotation (0028,0301) says, except under ``accept_burned_in_annotation``, which
leaves the pixels as they are (the output then says Patient Identity Removed NO). Then:

- text found, no ``clean_pixel_data``: refused (:class:`PixelTextRefusedError`), naming frame and box;
- ``clean_pixel_data``: every text region found, plus the regions configured for the device, is
  blanked on every frame with the frame's background value; the cleaned frames are scanned again and
  the output is not released if text is still found (DeidentificationVerificationError);
- no text and nothing to blank: the pixel data is not touched (copied byte for byte by the engine).

Cleaning decodes the pixel data, so a compressed file is written back as Explicit VR Little Endian
(a big endian source as Explicit VR Big Endian); a lossy source keeps its Lossy Image Compression
history.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from dicom.services import ocr, pixel_text
from dicom.services.errors import DeidentificationRefusedError, DeidentificationVerificationError
from dicom.services.pixel_text import PixelFrames, TextRegion
from dicom.services.rendering import PixelElement, RenderError, decode_frame, iter_frames, pixel_element_in

from .options import DeidOptions

# Blank, rescan, blank what the rescan found: at most this many times before the file is refused.
CLEANING_ROUNDS = 3
# Listed in a refusal; the rest are counted.
_DESCRIBED_REGIONS = 3
# Transfer syntaxes whose compression loses information: (Lossy Image Compression Method, defined terms).
_LOSSY_METHODS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
    "1.2.840.10008.1.2.4.100": "ISO_13818_2",
    "1.2.840.10008.1.2.4.101": "ISO_13818_2",
    "1.2.840.10008.1.2.4.102": "ISO_14496_10",
    "1.2.840.10008.1.2.4.103": "ISO_14496_10",
    "1.2.840.10008.1.2.4.104": "ISO_14496_10",
    "1.2.840.10008.1.2.4.105": "ISO_14496_10",
    "1.2.840.10008.1.2.4.106": "ISO_14496_10",
    "1.2.840.10008.1.2.4.107": "ISO_23008_2",
    "1.2.840.10008.1.2.4.108": "ISO_23008_2",
}


@dataclass
class PixelOutcome:
    """What the pixel policy did to one file; JSON-safe via :meth:`to_dict`, never holds text."""

    scanned: bool = False
    skipped: str = ""
    number_of_frames: int = 0
    frames: tuple[int, ...] = ()
    ocr_frames: tuple[int, ...] = ()
    regions: tuple[TextRegion, ...] = ()
    device_regions: tuple[TextRegion, ...] = ()
    cleaned: bool = False
    has_pixel_data: bool = True

    @property
    def needs_cleaning(self) -> bool:
        return bool(self.regions or self.device_regions)

    def to_dict(self) -> dict:
        """Frames counted from 1; regions as ``[frame, left, top, width, height]``."""
        return {
            "scanned": self.scanned,
            "skipped": self.skipped,
            "number_of_frames": self.number_of_frames,
            "scanned_frames": [index + 1 for index in self.frames],
            "ocr_frames": [index + 1 for index in self.ocr_frames],
            "text_regions": [region.as_list() for region in self.regions],
            "device_regions": [region.as_list()[1:] for region in self.device_regions],
            "cleaned": self.cleaned,
        }


class PixelTextRefusedError(DeidentificationRefusedError):
    """Text was found in the pixel data and Clean Pixel Data was not asked for."""

    def __init__(self, detail: str, outcome: PixelOutcome) -> None:
        super().__init__(detail)
        self.outcome = outcome


def describe_regions(regions: tuple[TextRegion, ...]) -> str:
    listed = "; ".join(region.describe() for region in regions[:_DESCRIBED_REGIONS])
    more = len(regions) - _DESCRIBED_REGIONS
    return listed + (f"; and {more} more" if more > 0 else "")


@contextmanager
def _refused_if_undecodable(purpose: str, hint: str = "") -> Iterator[None]:
    """A frame that cannot be decoded refuses the file: it cannot be checked or cleaned."""
    try:
        yield
    except RenderError as error:
        raise DeidentificationRefusedError(
            f"the pixel data cannot be decoded to {purpose} ({error.detail}){hint}"
        ) from None


def _scan(frames: PixelFrames) -> pixel_text.FrameScan:
    try:
        with _refused_if_undecodable(
            "check it for burned-in text",
            "; resend with accept_burned_in_annotation to keep the pixels as they are",
        ):
            return pixel_text.scan_frames(frames)
    except ocr.OcrUnavailableError as error:
        raise DeidentificationRefusedError(
            f"the pixel data cannot be checked for burned-in text ({error})"
        ) from None


def inspect(
    ds: Dataset, pixels: PixelElement | None, fp: BinaryIO | None, *, options: DeidOptions
) -> PixelOutcome:
    """Scan the pixel data of ``ds`` (value at ``pixels`` in ``fp``, or in ``ds``) under ``options``.

    Returns what was found and whether the pixels must be cleaned. Raises PixelTextRefusedError when
    text is found without ``clean_pixel_data``, and DeidentificationRefusedError when the pixel data
    cannot be decoded to be checked. Reads the file; changes nothing (``fp``'s position moves).
    """
    if pixels is None:
        return PixelOutcome(skipped="no pixel data", has_pixel_data=False)
    if options.accept_burned_in_annotation:
        return PixelOutcome(skipped="accept_burned_in_annotation")
    frames = PixelFrames(ds, pixels, fp)
    scan = _scan(frames)
    outcome = PixelOutcome(
        scanned=True,
        number_of_frames=frames.number_of_frames,
        frames=scan.frames,
        ocr_frames=scan.ocr_frames,
        regions=scan.regions,
    )
    if scan.regions and not options.clean_pixel_data:
        raise PixelTextRefusedError(
            # How to proceed first: bulk items and audit rows keep 255 characters of it.
            "burned-in text was found in the pixel data; resend with clean_pixel_data to blank it, or "
            "with accept_burned_in_annotation to keep the pixels as they are (Patient Identity Removed "
            f"is then NO). Text at {describe_regions(scan.regions)}",
            outcome,
        )
    if options.clean_pixel_data:
        outcome.device_regions = pixel_text.device_regions_for(ds)
    return outcome


@dataclass(frozen=True)
class CleaningPlan:
    """What Clean Pixel Data writes: the boxes (grown by the margin) blanked on every frame, and how
    the frames come out of the decoder (photometric interpretation, sample type, native YBR kept)."""

    boxes: tuple[TextRegion, ...]
    photometric: str
    dtype: np.dtype
    as_rgb: bool
    source_syntax: UID

    @property
    def little_endian(self) -> bool:
        return self.source_syntax.is_little_endian


def plan_cleaning(
    ds: Dataset, pixels: PixelElement, fp: BinaryIO | None, outcome: PixelOutcome
) -> CleaningPlan:
    """Find the boxes that leave no readable text on the scanned frames, and verify that they do.

    The scanned frames are decoded, blanked (:func:`blank_frame`) and scanned again without the gate;
    what that finds is added, up to :data:`CLEANING_ROUNDS` times, each round from the decoded frames
    with every box so far, so the last scan sees exactly what will be written. That last scan is the
    verification: text still found raises DeidentificationVerificationError (nothing is released).
    ``outcome`` records every region found; DeidentificationRefusedError if a frame cannot be decoded.
    """
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    as_rgb = syntax.is_compressed  # compressed YBR decodes to RGB; native YBR is kept as stored
    with _refused_if_undecodable("clean it"):
        decoded = {
            index: decode_frame(ds, pixels, fp, index=index, as_rgb=as_rgb) for index in outcome.frames
        }
    first, photometric = decoded[outcome.frames[0]]
    rows, columns = first.shape[:2]
    boxes = [region.expanded(rows=rows, columns=columns) for region in outcome.device_regions]
    found = list(outcome.regions)
    for _round in range(CLEANING_ROUNDS):
        boxes += [region.expanded(rows=rows, columns=columns) for region in found]
        images = [
            (index, pixel_text.display_image(blank_frame(frame, boxes), photometric, ds))
            for index, (frame, _) in decoded.items()
        ]
        # Blanking changes what the detector sees: text it missed beside a line it found, or under
        # the window of the first pass, can surface. Rescan without the gate and blank that too.
        rescan = pixel_text.scan_images(images, gate=False)
        if not rescan.regions:
            break
        found = list(rescan.regions)
        outcome.regions = outcome.regions + rescan.regions
    else:
        raise DeidentificationVerificationError(
            "verification failed: burned-in text is still found in the pixel data after cleaning: "
            f"{describe_regions(rescan.regions)}"
        )
    outcome.cleaned = True
    return CleaningPlan(tuple(boxes), photometric, first.dtype, as_rgb, syntax)


def blank_frame(frame: np.ndarray, boxes) -> np.ndarray:
    """A copy of ``frame`` with ``boxes`` filled with its background (see pixel_text.blank_regions)."""
    cleaned = np.array(frame, copy=True)
    pixel_text.blank_regions(cleaned[np.newaxis, ...], boxes)
    return cleaned


def clean(ds: Dataset, outcome: PixelOutcome) -> None:
    """Clean Pixel Data on ``ds`` with its pixel data in memory: plan, then rewrite every frame.

    For what the streaming path cannot take (deflated files, bit-packed pixels). Holds the decoded
    frames of the whole file in memory. Raises as :func:`plan_cleaning`.
    """
    pixels = pixel_element_in(ds)
    plan = plan_cleaning(ds, pixels, None, outcome)
    with _refused_if_undecodable("clean it"):
        frames = [
            blank_frame(frame, plan.boxes) for frame, _ in iter_frames(ds, pixels, None, as_rgb=plan.as_rgb)
        ]
    if int(ds.BitsAllocated) == 1:
        data = pack_bits(np.stack(frames))
    else:
        data = b"".join(_frame_bytes(frame, plan) for frame in frames)
    apply_plan_to_header(ds, plan)
    if len(data) % 2:
        data += b"\x00"
    setattr(ds, pixels.keyword, data)
    ds[pixels.keyword].VR = _pixel_vr(pixels.keyword, bits=int(ds.BitsAllocated))
    ds[pixels.keyword].is_undefined_length = False


def streamable(ds: Dataset) -> bool:
    """Whether cleaned frames can be written one by one (whole bytes per frame: not bit-packed)."""
    return int(ds.get("BitsAllocated") or 0) % 8 == 0


def write_cleaned_pixels(writer, ds: Dataset, pixels: PixelElement, fp: BinaryIO, plan: CleaningPlan) -> None:
    """Write the pixel data element of the cleaned frames to ``writer``, decoding one frame at a time.

    ``ds`` is the source header (its image attributes as they were read). Memory: one frame.
    Raises DeidentificationRefusedError if a frame cannot be decoded (the caller discards the output).
    """
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    frame_size = int(ds.Rows) * int(ds.Columns) * samples * plan.dtype.itemsize
    length = frame_size * frames
    header = struct.Struct("<HH2sHL" if plan.little_endian else ">HH2sHL")
    tag = tag_for_keyword(pixels.keyword)
    vr = _pixel_vr(pixels.keyword, bits=plan.dtype.itemsize * 8)
    writer.write(header.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, length + length % 2))
    written = 0
    with _refused_if_undecodable("clean it"):
        for frame, _ in iter_frames(ds, pixels, fp, as_rgb=plan.as_rgb):
            data = _frame_bytes(blank_frame(frame, plan.boxes), plan)
            if len(data) != frame_size or written == frames:
                raise DeidentificationRefusedError(
                    "the decoded pixel data does not match its image attributes"
                )
            writer.write(data)
            written += 1
    if written != frames:
        raise DeidentificationRefusedError("the pixel data holds fewer frames than Number of Frames says")
    if length % 2:
        writer.write(b"\x00")


def apply_plan_to_header(ds: Dataset, plan: CleaningPlan) -> None:
    """The attributes that native pixel data written from ``plan`` implies, set on ``ds``.

    Explicit VR Little Endian, except that a big endian source stays Explicit VR Big Endian: its other
    binary values (LUTs, overlays) are in that byte order, and pydicom does not swap them.
    """
    bits = plan.dtype.itemsize * 8
    if int(ds.BitsAllocated) != 1 and bits != int(ds.BitsAllocated):
        ds.BitsAllocated = bits
    for extended in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if extended in ds:
            del ds[extended]
    ds.PhotometricInterpretation = plan.photometric
    if int(ds.get("SamplesPerPixel") or 1) > 1:
        ds.PlanarConfiguration = 0
    method = _LOSSY_METHODS.get(str(plan.source_syntax))
    if method is not None:
        # The decoded values carry the loss; PS3.3 C.7.6.1.1.5: once lossy, always 01, with its history.
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if plan.little_endian else ExplicitVRBigEndian


def _frame_bytes(frame: np.ndarray, plan: CleaningPlan) -> bytes:
    order = "<" if plan.little_endian else ">"
    return np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder(order)).tobytes()


def _pixel_vr(keyword: str, *, bits: int) -> str:
    if keyword == "FloatPixelData":
        return "OF"
    if keyword == "DoubleFloatPixelData":
        return "OD"
    return "OW" if bits > 8 else "OB"
