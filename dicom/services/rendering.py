"""Render the first frame of a DICOM file as a PNG, for the admin's thumbnails and full views.

A plain service: it takes a path or an open binary file and returns PNG bytes. It stores nothing and
caches nothing (the caller caches the result in storage). Only the first frame of a multi-frame file is
decoded. Every failure leaves as :class:`RenderError` (or :class:`NoPixelDataError`) whose ``detail`` says
what is wrong with the file, never a value from it.
"""

import io
import logging
import os
import struct
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    convert_color_space,
    get_decoder,
)
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

from dicom.services.errors import DicomServiceError

logger = logging.getLogger(__name__)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# (7FE0,0010), (7FE0,0008), (7FE0,0009) as they appear on disk, little and big endian.
_PIXEL_DATA_TAG_BYTES = tuple(
    struct.pack(f"{order}HH", 0x7FE0, element) for element in (0x0010, 0x0008, 0x0009) for order in "<>"
)
_REQUIRED_IMAGE_PIXEL = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation")
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_YBR_FULL = ("YBR_FULL", "YBR_FULL_422")
# Percentiles of the automatic window: wide enough to keep the anatomy, narrow enough that a few hot
# pixels (or a padding value) do not flatten the rest of the image to one grey.
_AUTO_WINDOW_PERCENTILES = (0.5, 99.5)


class RenderError(DicomServiceError):
    """The file cannot be rendered: not readable, not DICOM, or its pixel data cannot be decoded."""

    status_code = 422


class NoPixelDataError(RenderError):
    """The file is DICOM but holds no image (a structured report, an RT plan, a DICOMDIR...)."""


def render_png(source: str | os.PathLike | BinaryIO, *, max_size: int | None = None) -> bytes:
    """Return the first frame of the DICOM file ``source`` as PNG bytes.

    Grayscale images go through the modality LUT (rescale slope/intercept), then the file's own VOI
    (the first Window Center/Width, or the VOI LUT Sequence), or an automatic 0.5-99.5 percentile window
    when the file has none; MONOCHROME1 is inverted; the output is an 8-bit ``L`` PNG. Colour images
    (RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR) come out as 8-bit ``RGB``.

    ``source`` is a path or a binary file object opened for reading (read from its current position and
    left open). With ``max_size`` the longer side is scaled down to at most ``max_size`` pixels keeping
    the aspect ratio; an image is never scaled up. The whole file is read into memory, but only its
    first frame is decoded.

    No side effects. Raises :class:`NoPixelDataError` when the file has no image and
    :class:`RenderError` for every other failure (missing file, not DICOM, undecodable pixel data, a
    ``max_size`` below 1), with a ``detail`` that carries no patient data.
    """
    if max_size is not None and max_size < 1:
        raise RenderError("max_size must be a positive number of pixels")

    try:
        return _render(source, max_size=max_size)
    except RenderError:
        raise
    except Exception as exc:
        # The last line of defence of "never a bare exception": a case none of the steps foresaw.
        raise RenderError(f"the image could not be rendered ({type(exc).__name__})") from exc


def _render(source: str | os.PathLike | BinaryIO, *, max_size: int | None) -> bytes:
    ds = _read_dataset(source)
    frame, photometric = _decode_first_frame(ds)
    try:
        if photometric in _MONOCHROME:
            gray = _grayscale_to_8bit(
                frame,
                _frame_voi_dataset(ds),
                photometric,
                # Float and Double Float Pixel Data hold real values already: no modality LUT applies.
                modality_lut="PixelData" in ds,
            )
            image = Image.fromarray(gray, mode="L")
        else:
            image = Image.fromarray(_colour_to_8bit_rgb(frame, ds, photometric), mode="RGB")
    except RenderError:
        raise
    except Exception as exc:
        # A malformed LUT or an odd sample layout surfaces as whatever numpy or pydicom raise.
        raise RenderError(f"the decoded pixel data cannot be turned into an image ({_reason(exc)})") from exc

    if max_size is not None:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return _png_bytes(image)


def render_placeholder_png(text: str, *, size: int = 256) -> bytes:
    """Return a square grey PNG of ``size`` pixels with ``text`` written on it in PIL's default font.

    For the admin to show in place of a file that has no image or failed to render. Text wider than the
    square is wrapped on spaces and clipped; keep it short. Raises ``ValueError`` if ``size`` is below 16.
    """
    if size < 16:
        raise ValueError("size must be at least 16 pixels")
    image = Image.new("L", (size, size), color=128)
    draw = ImageDraw.Draw(image)
    margin = max(2, size // 16)
    lines = _wrap(draw, text, size - 2 * margin)
    line_height = draw.textbbox((0, 0), "Ag")[3] + 2
    top = max(margin, (size - line_height * len(lines)) // 2)
    for number, line in enumerate(lines):
        width = draw.textlength(line)
        draw.text(((size - width) / 2, top + number * line_height), line, fill=255)
    return _png_bytes(image)


def _read_dataset(source: str | os.PathLike | BinaryIO) -> Dataset:
    """Read the whole dataset; raise NoPixelDataError when it has no pixel data element."""
    # The reasons below never quote the path: file names in PACS exports often carry patient names.
    try:
        if hasattr(source, "read"):
            return _read_image_dataset(source)
        with open(source, "rb") as fp:
            return _read_image_dataset(fp)
    except FileNotFoundError as exc:
        raise RenderError("the file does not exist") from exc
    except IsADirectoryError as exc:
        raise RenderError("the path is a directory, not a file") from exc
    except PermissionError as exc:
        raise RenderError("the file cannot be read (permission denied)") from exc


def _read_image_dataset(fp: BinaryIO) -> Dataset:
    start = fp.tell()
    try:
        ds = dcmread(fp)
    except InvalidDicomError as exc:
        raise RenderError("not a DICOM file (no DICOM file meta information)") from exc
    except Exception as exc:
        raise RenderError(
            f"the file is not readable as DICOM (truncated or malformed header: {type(exc).__name__})"
        ) from exc
    if any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        return ds

    # pydicom reads a file cut short inside encapsulated pixel data with only a warning, and drops the
    # element (or everything it had read), so "no pixel data" must be checked against the bytes.
    fp.seek(start)
    if _contains_pixel_data_tag(fp):
        raise RenderError("pixel data is truncated (the file ends inside its pixel data element)")
    # A short read inside the header is silent too: an image SOP class or image attributes without pixel
    # data is taken for a cut-short file. Files cut before either is read still pass for "no image".
    sop_class_name = _sop_class_name(ds)
    if "Image Storage" in sop_class_name or all(key in ds for key in ("Rows", "Columns", "BitsAllocated")):
        raise RenderError("pixel data is missing: the dataset describes an image but the file ends before it")
    if len(ds) == 0:
        raise RenderError("the file is not readable as DICOM (its dataset is empty or cut short)")
    raise NoPixelDataError(f"this file has no image (SOP class: {sop_class_name})")


def _contains_pixel_data_tag(fp: BinaryIO) -> bool:
    overlap = max(len(tag) for tag in _PIXEL_DATA_TAG_BYTES) - 1
    tail = b""
    while chunk := fp.read(1 << 20):
        window = tail + chunk
        if any(tag in window for tag in _PIXEL_DATA_TAG_BYTES):
            return True
        tail = window[-overlap:]
    return False


def _decode_first_frame(ds: Dataset) -> tuple[np.ndarray, str]:
    """Return frame 0 and the photometric interpretation of the decoded array (not of the file)."""
    keyword = next(kw for kw in _PIXEL_KEYWORDS if kw in ds)

    missing = [keyword for keyword in _REQUIRED_IMAGE_PIXEL if ds.get(keyword) in (None, "")]
    if missing:
        raise RenderError(f"required image attributes are missing: {', '.join(missing)}")

    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not transfer_syntax:
        raise RenderError("the file does not state its transfer syntax, so its pixel data cannot be decoded")
    transfer_syntax = UID(transfer_syntax)
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise RenderError(f"transfer syntax {transfer_syntax.name} is not supported for decoding") from exc
    if not decoder.is_available:
        raise RenderError(f"transfer syntax {transfer_syntax.name} needs a decoder that is not installed")

    if decoder.is_native:
        _check_native_length(ds, keyword)
    try:
        # The decoder, not pydicom.pixels.pixel_array(), because only it reports the photometric
        # interpretation of what it returns: JPEG baseline and JPEG 2000 YBR come back as RGB.
        array, properties = decoder.as_array(ds, index=0)
    except Exception as exc:
        reason = _reason(exc)
        raise RenderError(f"the {transfer_syntax.name} pixel data cannot be decoded ({reason})") from exc

    photometric = str(properties.get("photometric_interpretation") or ds.get("PhotometricInterpretation", ""))
    samples = 1 if array.ndim == 2 else array.shape[-1]
    if samples == 1 and photometric not in (*_MONOCHROME, "PALETTE COLOR"):
        raise RenderError(f"photometric interpretation {photometric or '(none)'} is not supported")
    if samples == 3 and photometric not in ("RGB", *_YBR_FULL):
        raise RenderError(f"photometric interpretation {photometric or '(none)'} is not supported")
    if samples not in (1, 3):
        raise RenderError(f"{samples} samples per pixel are not supported")
    return array, photometric


def _check_native_length(ds: Dataset, keyword: str) -> None:
    # pydicom's own message says "less than expected"; the admin wants the plain word "truncated".
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and not isinstance(frames, int):
        # An invalid IS stays a str, which get_expected_length() would multiply as a string.
        raise RenderError("(0028,0008) Number of Frames is not a valid integer")
    try:
        expected = int(get_expected_length(ds, unit="bytes"))
    except Exception as exc:
        raise RenderError(f"the image attributes are missing or invalid ({_reason(exc)})") from exc
    actual = len(ds[keyword].value or b"")
    if actual < expected:
        raise RenderError(f"pixel data is truncated ({actual} of {expected} bytes present)")


def _frame_voi_dataset(ds: Dataset) -> Dataset:
    """Return a dataset with the rescale and window that apply to frame 0.

    Enhanced multi-frame objects keep them in the functional groups rather than at the top level;
    pydicom's LUT functions read only the top level, so frame 0's values are lifted into a copy.
    """
    groups = [
        item
        for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
        if (sequence := ds.get(keyword))
        for item in sequence[:1]
    ]
    if not groups:
        return ds
    view = Dataset()
    view.update(ds.group_dataset(0x0028))
    if hasattr(ds, "file_meta"):
        view.file_meta = ds.file_meta
    # Per-frame values override shared ones, so they are applied last.
    for item in groups:
        for macro in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if item.get(macro):
                for element in item[macro][0]:
                    view[element.tag] = element
    return view


def _grayscale_to_8bit(frame: np.ndarray, ds: Dataset, photometric: str, *, modality_lut: bool) -> np.ndarray:
    values = apply_modality_lut(frame, ds) if modality_lut else frame
    window = _file_voi(values, ds)
    if window is None:
        values = values.astype(np.float64)
        low, high = _auto_window(values)
    else:
        values, (low, high) = window
    scaled = _scale(values, low, high)
    if photometric == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled


def _file_voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, tuple[float, float]] | None:
    """Apply the file's own VOI LUT or window; return the result and its output range, or None."""
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if not (has_lut or has_window):
        return None
    try:
        result = apply_voi_lut(values, ds, index=0)
        if has_lut:
            descriptor = ds.VOILUTSequence[0].LUTDescriptor
            first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
            ends = apply_voi_lut(np.array([first, first + entries - 1]), ds, index=0)
        else:
            # Far outside any window, LINEAR and SIGMOID both give the ends of their output range.
            with np.errstate(over="ignore"):
                ends = apply_voi_lut(np.array([-1e300, 1e300]), ds, index=0)
        low, high = float(np.min(ends)), float(np.max(ends))
    except Exception as exc:
        # A window of width 0 or an unreadable LUT should not hide the image: fall back to auto.
        logger.info("VOI of the file is unusable (%s); using an automatic window", type(exc).__name__)
        return None
    if not high > low:
        return None
    return np.asarray(result, dtype=np.float64), (low, high)


def _auto_window(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, _AUTO_WINDOW_PERCENTILES))
    if high <= low:  # mostly one value (e.g. a mask): use the full range instead
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return low, low + 1.0
    return low, high


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=low, posinf=high, neginf=low)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _colour_to_8bit_rgb(frame: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        # The LUT's own entry size (8 or 16 bits) sets the range, not the indices' Bits Stored.
        bits = 8 if rgb.dtype.itemsize == 1 else 16
    else:
        rgb = frame
        if photometric in _YBR_FULL:
            # pydicom's decoders convert YBR to RGB by default; this covers one that did not.
            rgb = convert_color_space(rgb, photometric, "RGB")
        bits = int(ds.get("BitsStored") or rgb.dtype.itemsize * 8)
    if bits == 8 and rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    return _scale(rgb, 0.0, float(2**bits - 1))


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and draw.textlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _sop_class_name(ds: Dataset) -> str:
    file_meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or getattr(file_meta, "MediaStorageSOPClassUID", "")
    return UID(str(sop_class)).name if sop_class else "unknown"


def _reason(exc: Exception) -> str:
    # pydicom's decoding messages describe the encoding (lengths, bit depths, element tags), not
    # element values; keep them, shortened, so the admin can see why.
    message = " ".join(str(exc).split())
    if len(message) > 200:
        message = message[:197] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
