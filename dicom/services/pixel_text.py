"""Burned-in text in pixel data: which frames to look at, where the text is, and how to blank it.

Pure Python on numpy and OpenCV (no Django, no settings). The de-identification engine calls it for
every file with pixel data (:mod:`dicom.services.deid.pixels` holds the policy); the OCR engine sits
behind :mod:`dicom.services.ocr`.

One frame is scanned in three steps:

1. **Display image.** The decoded frame as 8 bits: grey images through a 0.5-99.5 percentile window
   of their stored values (overlay text, drawn at an extreme value, saturates; text drawn inside the
   anatomy's range keeps its contrast), MONOCHROME1 inverted; colour images as RGB.
2. **Gate.** Thin bright or dark strokes (a morphological top-hat and black-hat of each channel,
   above :data:`GATE_CONTRAST`) are labelled; components of a character's size are grouped into
   lines. A frame without one line of at least two character-like strokes has no text, and the OCR
   engine is not run: this keeps a CT or MR slice at a few milliseconds.
3. **OCR.** The engine's own detector finds the text lines of the whole frame and its recogniser
   reads them. A line counts as text when it reads as at least :data:`MIN_TEXT_CHARACTERS` letters or
   digits with the engine's confidence: depth ticks, arrows, dots and colour bars do not.

The text read is patient data. It is used only to decide that a region holds text and is never
returned, logged or stored: a :class:`TextRegion` is a frame number and a box.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from pydicom.dataset import Dataset

from dicom.services import ocr
from dicom.services.rendering import PixelElement, colour_to_8bit_rgb, decode_frame

MIN_TEXT_CHARACTERS = 2
# Contrast (of 255) that a stroke needs over its surroundings to reach the gate.
GATE_CONTRAST = 32
# A candidate line reaches the OCR when it is this many times wider than high, or when at least
# ALIGNED_CHARACTERS of its strokes share a height and a vertical centre (a short word). Anatomy's
# small bright structures (bone, vessels, contrast) make squat, irregular clusters.
LONG_LINE = 2.5
ALIGNED_CHARACTERS = 3
# A frame smaller than this on either side cannot hold a line of readable text.
MIN_TEXT_FRAME = 12
# Blanked boxes grow by this fraction of their height on every side (at least 2 pixels): the
# detector's box can clip the tips of letters.
BLANK_MARGIN = 0.25
DEVICE_REGIONS_FILE = Path(__file__).resolve().parent / "device_regions.json"

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_WINDOW_SAMPLES = 128  # the window is computed on a grid of at most 128 x 128 samples


@dataclass(frozen=True)
class TextRegion:
    """A box of one frame (0-based ``frame``), in pixels of the image; ``origin`` is ocr or device."""

    frame: int
    left: int
    top: int
    width: int
    height: int
    origin: str = "ocr"

    def describe(self) -> str:
        """Where the region is, in words a person reads: frames counted from 1, as DICOM does."""
        return f"frame {self.frame + 1} at x={self.left}, y={self.top}, {self.width}x{self.height}"

    def as_list(self) -> list[int]:
        """``[frame (from 1), left, top, width, height]``: how reports and the admin store it."""
        return [self.frame + 1, self.left, self.top, self.width, self.height]

    def expanded(self, *, rows: int, columns: int) -> TextRegion:
        """The region grown by the blanking margin and clipped to a ``rows`` x ``columns`` frame."""
        margin = max(2, round(self.height * BLANK_MARGIN))
        left, top = max(0, self.left - margin), max(0, self.top - margin)
        right = min(columns, self.left + self.width + margin)
        bottom = min(rows, self.top + self.height + margin)
        return TextRegion(self.frame, left, top, max(0, right - left), max(0, bottom - top), self.origin)


def frames_to_scan(number_of_frames: int) -> tuple[int, ...]:
    """The 0-based frames that are scanned: the first, the middle and the last.

    Burned-in annotation is drawn by the device's display on every frame it captures, so text on a
    cine loop is on its first frame; the middle and last frames catch text that appears or changes
    during the loop (a counter, a label typed while recording) for the cost of two more frames.
    """
    if number_of_frames <= 1:
        return (0,)
    return tuple(sorted({0, number_of_frames // 2, number_of_frames - 1}))


class PixelFrames:
    """The frames of one dataset's pixel data, decoded one at a time through pydicom's decoders.

    ``ds`` is the header (or the whole dataset when ``pixels.in_dataset``); ``fp`` the open file the
    pixel data value lies in (None when it is in ``ds``). Raises ``RenderError`` when a frame cannot
    be decoded.
    """

    def __init__(self, ds: Dataset, pixels: PixelElement, fp: BinaryIO | None) -> None:
        self.ds = ds
        self.pixels = pixels
        self.fp = fp
        frames = ds.get("NumberOfFrames")
        self.number_of_frames = frames if isinstance(frames, int) and frames > 0 else 1

    def display(self, index: int) -> np.ndarray:
        frame, photometric = decode_frame(self.ds, self.pixels, self.fp, index=index)
        return display_image(frame, photometric, self.ds)


def display_image(frame: np.ndarray, photometric: str, ds: Dataset) -> np.ndarray:
    """The frame as the scan sees it: ``H x W`` uint8 for grey images, ``H x W x 3`` for colour."""
    if photometric in _MONOCHROME:
        values = frame[..., 0] if frame.ndim == 3 else frame
        row_step = max(1, values.shape[0] // _WINDOW_SAMPLES)
        column_step = max(1, values.shape[1] // _WINDOW_SAMPLES)
        sample = values[::row_step, ::column_step]
        if values.dtype.kind == "f":
            sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return np.zeros(values.shape, dtype=np.uint8)
        low, high = (float(v) for v in np.percentile(sample, (0.5, 99.5)))
        if high <= low:
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if high <= low:
            return np.zeros(values.shape, dtype=np.uint8)
        scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
        image = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)
        return 255 - image if photometric == "MONOCHROME1" else image
    return colour_to_8bit_rgb(frame, ds, photometric)


def stroke_lines(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The gate: boxes ``(left, top, width, height)`` of lines of character-sized strokes, maybe text.

    Cheap (a few milliseconds for 512 x 512) and generous: the OCR engine decides what is text.
    """
    scale = 2 if max(image.shape[:2]) > 2048 else 1
    if scale > 1:
        image = cv2.resize(
            image, (image.shape[1] // scale, image.shape[0] // scale), interpolation=cv2.INTER_AREA
        )
    rows, columns = image.shape[:2]
    if min(rows, columns) < MIN_TEXT_FRAME:
        return []
    size = 9 if max(rows, columns) <= 1100 else 13
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    planes = [image] if image.ndim == 2 else [image[..., channel] for channel in range(image.shape[2])]
    largest = max(12, round(min(rows, columns) * 0.15))
    characters = np.zeros((rows, columns), dtype=np.uint8)
    char_heights = []
    # Per polarity: labels, count, is_character, stats.
    found: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []
    # Bright strokes (top-hat) and dark strokes (black-hat) apart: together, the gaps between the
    # strokes of bright text would join its letters into one blob.
    for operation in (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT):
        response = None
        for plane in planes:
            strokes = cv2.morphologyEx(np.ascontiguousarray(plane), operation, kernel)
            response = strokes if response is None else cv2.max(response, strokes)
        _, mask = cv2.threshold(response, GATE_CONTRAST - 1, 255, cv2.THRESH_BINARY)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count <= 1:
            continue
        widths, heights, areas = stats[1:, 2], stats[1:, 3], stats[1:, 4]
        is_character = (heights >= 4) & (heights <= largest) & (widths <= 3 * largest) & (areas >= 6)
        if not is_character.any():
            continue
        lookup = np.zeros(count, dtype=np.uint8)
        lookup[1:][is_character] = 255
        characters = cv2.max(characters, lookup[labels])
        char_heights.append(heights[is_character])
        found.append((labels, count, is_character, stats))
    if not char_heights:
        return []
    heights = np.concatenate(char_heights)
    if heights.size < MIN_TEXT_CHARACTERS:
        return []
    gap = max(3, int(np.median(heights)))
    joined = cv2.dilate(characters, cv2.getStructuringElement(cv2.MORPH_RECT, (gap, 3)))
    _, line_labels, line_stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    # The characters of each line: (line, character) pairs of their pixels, for each polarity on
    # its own (a bright letter and the dark gap beside it touch).
    members: dict[int, list[tuple[int, float, int, int]]] = {}
    for labels, count, is_character, stats in found:
        lookup = np.zeros(count, dtype=bool)
        lookup[1:] = is_character
        ys, xs = np.nonzero(lookup[labels])
        pairs = np.unique(line_labels[ys, xs].astype(np.int64) * count + labels[ys, xs])
        for line, character in zip((pairs // count).tolist(), (pairs % count).tolist(), strict=True):
            left, top, width, height = (int(v) for v in stats[character, :4])
            members.setdefault(line, []).append((height, top + height / 2, left, width))
    lines = []
    for label, characters in members.items():
        left, top, width, height, _area = (int(v) for v in line_stats[label])
        if len(characters) >= MIN_TEXT_CHARACTERS and (
            width >= LONG_LINE * height or _aligned(characters) >= ALIGNED_CHARACTERS
        ):
            lines.append((left * scale, top * scale, width * scale, height * scale))
    return lines


def _aligned(characters: list[tuple[int, float, int, int]]) -> int:
    """The longest run of a line's strokes that stand side by side like letters of one word.

    Letters share a height and a vertical centre (within 40 % and 35 % of the typical height), follow
    each other left to right without overlapping much, and are not far apart. Blobs of anatomy that
    happen to sit in a row are of unequal sizes or stacked.
    """
    heights = np.array([character[0] for character in characters], dtype=np.float64)
    centres = np.array([character[1] for character in characters], dtype=np.float64)
    typical, middle = float(np.median(heights)), float(np.median(centres))
    same = (np.abs(heights - typical) <= 0.4 * typical) & (np.abs(centres - middle) <= 0.35 * typical)
    row = sorted((left, width) for (_, _, left, width), keep in zip(characters, same, strict=True) if keep)
    best = run = 0
    previous = None
    for left, width in row:
        if previous is not None and (
            left >= previous[0] + 0.7 * previous[1] and left - (previous[0] + previous[1]) <= 1.5 * typical
        ):
            run += 1
        else:
            run = 1
        best = max(best, run)
        previous = (left, width)
    return best


def is_text(line: ocr.OcrLine) -> bool:
    """Whether an OCR line is text: enough letters or digits, read with the engine's confidence."""
    return sum(character.isalnum() for character in line.text) >= MIN_TEXT_CHARACTERS


@dataclass(frozen=True)
class FrameScan:
    """What the scan of some frames found: text regions, and which frames went past the gate."""

    frames: tuple[int, ...]
    ocr_frames: tuple[int, ...]
    regions: tuple[TextRegion, ...]


def scan_images(images: Iterable[tuple[int, np.ndarray]], *, gate: bool = True) -> FrameScan:
    """Find text in ``(frame index, display image)`` pairs; ``gate=False`` runs the OCR on every one.

    Raises ``ocr.OcrUnavailableError`` when the engine cannot be loaded.
    """
    frames, ocr_frames, regions = [], [], []
    for index, image in images:
        frames.append(index)
        if gate and not stroke_lines(image):
            continue
        ocr_frames.append(index)
        for line in ocr.read_lines(image):
            if is_text(line):
                regions.append(TextRegion(index, line.left, line.top, line.width, line.height))
    return FrameScan(tuple(frames), tuple(ocr_frames), tuple(regions))


def scan_frames(frames: PixelFrames, *, indices: Iterable[int] | None = None, gate: bool = True) -> FrameScan:
    """Decode ``indices`` (default :func:`frames_to_scan`) of ``frames`` and scan them."""
    chosen = frames_to_scan(frames.number_of_frames) if indices is None else tuple(indices)
    return scan_images(((index, frames.display(index)) for index in chosen), gate=gate)


def background_value(frame: np.ndarray) -> np.ndarray:
    """The frame's most frequent value (per sample for colour): what blanked regions are filled with."""
    samples = frame.reshape(-1, frame.shape[-1]) if frame.ndim == 3 else frame.reshape(-1, 1)
    step = max(1, samples.shape[0] // 65536)
    fill = []
    for channel in range(samples.shape[1]):
        values, counts = np.unique(samples[::step, channel], return_counts=True)
        fill.append(values[np.argmax(counts)])
    return np.array(fill, dtype=frame.dtype)


def blank_regions(frames: np.ndarray, boxes: Iterable[TextRegion]) -> None:
    """Fill every box (its frame ignored) on every frame of ``frames`` with that frame's background.

    ``frames`` is ``N x H x W`` or ``N x H x W x S``, changed in place; pixels outside the boxes are
    not touched.
    """
    boxes = list(boxes)
    for frame in frames:
        fill = background_value(frame)
        for box in boxes:
            region = frame[box.top : box.top + box.height, box.left : box.left + box.width]
            region[...] = fill if frame.ndim == 3 else fill[0]


@lru_cache(maxsize=1)
def load_device_regions() -> tuple[dict, ...]:
    """The committed table of regions to blank per device (``device_regions.json``), parsed once."""
    data = json.loads(DEVICE_REGIONS_FILE.read_text(encoding="utf-8"))
    return tuple(data["devices"])


def device_regions_for(ds: Dataset) -> tuple[TextRegion, ...]:
    """The configured regions of the device that made ``ds`` (Manufacturer, model, Rows x Columns).

    An entry matches when its manufacturer starts the file's Manufacturer (case-insensitive), its
    model equals Manufacturer's Model Name (case-insensitive; ``*`` matches any) and its rows and
    columns equal the image's. Every matching entry's regions apply, to every frame.
    """
    manufacturer = str(ds.get("Manufacturer") or "").strip().upper()
    model = str(ds.get("ManufacturerModelName") or "").strip().upper()
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not manufacturer or not isinstance(rows, int) or not isinstance(columns, int):
        return ()
    regions = []
    for entry in load_device_regions():
        if not manufacturer.startswith(entry["manufacturer"].upper()):
            continue
        if entry["model"] != "*" and entry["model"].upper() != model:
            continue
        if entry["rows"] != rows or entry["columns"] != columns:
            continue
        for left, top, width, height in entry["regions"]:
            regions.append(TextRegion(0, left, top, width, height, origin="device"))
    return tuple(regions)
