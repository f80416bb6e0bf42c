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

from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from dicom.services import ocr, pixel_text
from dicom.services.errors import DeidentificationRefusedError, DeidentificationVerificationError
from dicom.services.pixel_text import PixelFrames, TextRegion
from dicom.services.rendering import PixelElement, RenderError

from .options import DeidOptions

# Blank, rescan, blank what the rescan found: at most this many times before the file is refused.
CLEANING_ROUNDS = 3
# Listed in a refusal; the rest are counted.
_DESCRIBED_REGIONS = 5
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
    transfer_syntax_changed: bool = False
    has_pixel_data: bool = True
    verified_frames: tuple[int, ...] = field(default=())

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


def _scan(frames: PixelFrames, *, gate: bool, indices=None) -> pixel_text.FrameScan:
    try:
        return pixel_text.scan_frames(frames, indices=indices, gate=gate)
    except RenderError as error:
        raise DeidentificationRefusedError(
            "the pixel data cannot be decoded to check it for burned-in text "
            f"({error.detail}); resend with accept_burned_in_annotation to keep the pixels as they are"
        ) from None
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
    scan = _scan(frames, gate=True)
    outcome = PixelOutcome(
        scanned=True,
        number_of_frames=frames.number_of_frames,
        frames=scan.frames,
        ocr_frames=scan.ocr_frames,
        regions=scan.regions,
    )
    if scan.regions and not options.clean_pixel_data:
        raise PixelTextRefusedError(
            f"burned-in text was found in the pixel data: {describe_regions(scan.regions)}. Resend with "
            "clean_pixel_data to blank it, or with accept_burned_in_annotation to keep the pixels as "
            "they are (Patient Identity Removed is then NO)",
            outcome,
        )
    if options.clean_pixel_data:
        outcome.device_regions = pixel_text.device_regions_for(ds, number_of_frames=frames.number_of_frames)
    return outcome


def clean(ds: Dataset, outcome: PixelOutcome) -> None:
    """Blank ``outcome``'s regions on every frame of ``ds`` (pixel data in memory) and verify.

    The pixel data is decoded whole and blanked; the frames first scanned are scanned again without
    the gate, and what that finds is blanked too, up to :data:`CLEANING_ROUNDS` times. The last scan
    is the verification: if it still finds text, DeidentificationVerificationError (nothing is
    released). The result is written back native (Explicit VR Little Endian; a big endian source stays
    big endian), and ``outcome`` records
    every region blanked. Raises DeidentificationRefusedError when the data cannot be decoded.
    """
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    keyword = next(kw for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if kw in ds)
    try:
        decoder = get_decoder(syntax)
        array, properties = decoder.as_array(ds, as_rgb=syntax.is_compressed)
    except Exception as exc:
        raise DeidentificationRefusedError(
            f"the pixel data cannot be decoded to clean it ({type(exc).__name__})"
        ) from None
    photometric = str(properties.get("photometric_interpretation") or ds.PhotometricInterpretation)
    samples = int(ds.get("SamplesPerPixel") or 1)
    frames_count = outcome.number_of_frames or 1
    shape = (frames_count, int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    array = np.ascontiguousarray(array).reshape(shape)
    rows, columns = shape[1], shape[2]
    boxes = [region.expanded(rows=rows, columns=columns) for region in outcome.device_regions]
    found = list(outcome.regions)
    for _round in range(CLEANING_ROUNDS):
        boxes += [region.expanded(rows=rows, columns=columns) for region in found]
        pixel_text.blank_regions(array, boxes)
        # Blanking changes what the detector sees: text it missed beside a line it found, or under
        # the window of the first pass, can surface. Rescan without the gate and blank that too.
        rescan = _rescan(array, photometric, ds, outcome.frames)
        if not rescan.regions:
            break
        found = list(rescan.regions)
        outcome.regions = outcome.regions + rescan.regions
    else:
        raise DeidentificationVerificationError(
            "verification failed: burned-in text is still found in the pixel data after cleaning: "
            f"{describe_regions(rescan.regions)}"
        )
    outcome.verified_frames = rescan.frames
    _write_native(ds, array, photometric=photometric, keyword=keyword, source_syntax=syntax)
    outcome.cleaned = True
    outcome.transfer_syntax_changed = syntax not in (ExplicitVRLittleEndian, ExplicitVRBigEndian)


def _rescan(
    array: np.ndarray, photometric: str, ds: Dataset, frames: tuple[int, ...]
) -> pixel_text.FrameScan:
    images = [(index, pixel_text.display_image(array[index], photometric, ds)) for index in frames]
    return pixel_text.scan_images(images, gate=False)


def _write_native(
    ds: Dataset, array: np.ndarray, *, photometric: str, keyword: str, source_syntax: UID
) -> None:
    """Store ``array`` as native pixel data of ``ds`` and fix the attributes it implies.

    Explicit VR Little Endian, except that a big endian source stays Explicit VR Big Endian: its other
    binary values (LUTs, overlays) are in that byte order, and pydicom does not swap them.
    """
    little_endian = source_syntax.is_little_endian
    bits_allocated = int(ds.BitsAllocated)
    if bits_allocated == 1:
        data = pack_bits(array)
    else:
        ordered = array.astype(array.dtype.newbyteorder("<" if little_endian else ">"), copy=False)
        data = ordered.tobytes()
        if ordered.dtype.itemsize * 8 != bits_allocated:
            ds.BitsAllocated = ordered.dtype.itemsize * 8
    if len(data) % 2:
        data += b"\x00"
    for extended in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if extended in ds:
            del ds[extended]
    setattr(ds, keyword, data)
    if keyword == "PixelData":
        ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds["PixelData" if keyword == "PixelData" else keyword].is_undefined_length = False
    ds.PhotometricInterpretation = photometric
    if int(ds.get("SamplesPerPixel") or 1) > 1:
        ds.PlanarConfiguration = 0
    method = _LOSSY_METHODS.get(str(source_syntax))
    if method is not None:
        # The decoded values carry the loss; PS3.3 C.7.6.1.1.5: once lossy, always 01, with its history.
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
