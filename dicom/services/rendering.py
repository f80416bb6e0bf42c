"""Render the first frame of a DICOM file as a PNG, for the admin's thumbnails and full views.

A plain service: it takes a path or an open binary file and returns PNG bytes. It stores nothing and
caches nothing (the caller caches the result in storage). Only the header and the first frame of a
multi-frame file are read: a 2 GB cine loop costs the memory of one frame, not of the file. Every failure leaves as :class:`RenderError` (or :class:`NoPixelDataError`) whose ``detail`` says
what is wrong with the file, never a value from it.
"""

import io
import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
from pydicom.pixels.utils import as_pixel_options, get_expected_length
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from dicom.services.errors import DicomServiceError

logger = logging.getLogger(__name__)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_TAG_KEYWORDS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_UNDEFINED_LENGTH = 0xFFFFFFFF
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


class NoSuchFrameError(RenderError):
    """The image has fewer frames than the one asked for."""

    status_code = 404


def render_png(source: str | os.PathLike | BinaryIO, *, max_size: int | None = None) -> bytes:
    """Return the first frame of the DICOM file ``source`` as PNG bytes.

    Grayscale images go through the modality LUT (rescale slope/intercept), then the file's own VOI
    (the first Window Center/Width, or the VOI LUT Sequence), or an automatic 0.5-99.5 percentile window
    when the file has none; MONOCHROME1 is inverted; the output is an 8-bit ``L`` PNG. Colour images
    (RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR) come out as 8-bit ``RGB``.

    ``source`` is a path or a binary file object opened for reading (read from its current position and
    left open). With ``max_size`` the longer side is scaled down to at most ``max_size`` pixels keeping
    the aspect ratio; an image is never scaled up. Only the header and frame 0's bytes are read (for
    encapsulated data, plus 8 bytes per fragment to check that the file is complete), so memory and
    time do not grow with the number of frames. A deflated file is the exception: it is inflated whole.

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
    return _png_bytes(
        _render_image(source, index=0, window=None, fit=(max_size, max_size) if max_size else None)
    )


@dataclass(frozen=True)
class Window:
    """A VOI window asked for instead of the file's own (PS3.3 C.11.2.1.2): centre, width, function."""

    center: float
    width: float
    function: str = "LINEAR"  # LINEAR, LINEAR_EXACT or SIGMOID


IMAGE_FORMATS = ("jpeg", "png")


def render_image(
    source: str | os.PathLike | BinaryIO,
    *,
    frame: int = 0,
    image_format: str = "jpeg",
    fit: tuple[int, int] | None = None,
    window: Window | None = None,
    quality: int = 90,
) -> bytes:
    """Return frame ``frame`` (from 0) of the DICOM file ``source`` as JPEG or PNG bytes.

    As :func:`render_png` (same LUTs, same errors), plus: any frame, JPEG output (``quality`` 1-100),
    ``fit`` (width, height) to scale the image down into, keeping its aspect ratio (never up), and a
    ``window`` that replaces the file's own VOI for grayscale images (ignored for colour). Only the
    header and that frame's bytes are read. No side effects. Raises RenderError (bad arguments
    included: an unknown format, a quality out of range, a fit below one pixel, a window of width
    below 1, or a frame the file does not have: NoSuchFrameError).
    """
    if image_format not in IMAGE_FORMATS:
        raise RenderError(f"image format must be one of {', '.join(IMAGE_FORMATS)}")
    if not 1 <= quality <= 100:
        raise RenderError("quality must be between 1 and 100")
    if fit is not None and min(fit) < 1:
        raise RenderError("the size to fit must be at least one pixel each way")
    if window is not None and (
        window.width < 1 or window.function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID")
    ):
        raise RenderError(
            "the window needs a width of at least 1 and a function LINEAR, LINEAR_EXACT or SIGMOID"
        )
    if frame < 0:
        raise RenderError("frame numbers start at 1")
    try:
        image = _render_image(source, index=frame, window=window, fit=fit)
    except RenderError:
        raise
    except Exception as exc:
        raise RenderError(f"the image could not be rendered ({type(exc).__name__})") from exc
    if image_format == "png":
        return _png_bytes(image)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _render_image(
    source: str | os.PathLike | BinaryIO,
    *,
    index: int,
    window: Window | None,
    fit: tuple[int, int] | None,
) -> Image.Image:
    with _opened(source) as fp:
        ds, pixels = _read_header(fp)
        frames = ds.get("NumberOfFrames")
        count = frames if isinstance(frames, int) and frames > 0 else 1
        if index >= count:
            raise NoSuchFrameError(f"the image has {count} frame(s): there is no frame {index + 1}")
        frame, photometric = decode_frame(ds, pixels, fp, index=index)
    try:
        if photometric in _MONOCHROME:
            voi = _frame_voi_dataset(ds) if window is None else _window_dataset(ds, window)
            gray = _grayscale_to_8bit(
                frame,
                voi,
                photometric,
                # Float and Double Float Pixel Data hold real values already: no modality LUT applies.
                modality_lut=pixels.keyword == "PixelData",
            )
            image = Image.fromarray(gray, mode="L")
        else:
            image = Image.fromarray(colour_to_8bit_rgb(frame, ds, photometric), mode="RGB")
    except RenderError:
        raise
    except Exception as exc:
        # A malformed LUT or an odd sample layout surfaces as whatever numpy or pydicom raise.
        raise RenderError(f"the decoded pixel data cannot be turned into an image ({_reason(exc)})") from exc

    if fit is not None:
        image.thumbnail(fit, Image.Resampling.LANCZOS)
    return image


def _window_dataset(ds: Dataset, window: Window) -> Dataset:
    """The rescale of frame 0 with the asked window in place of the file's VOI."""
    view = Dataset()
    view.update(_frame_voi_dataset(ds).group_dataset(0x0028))
    for keyword in ("VOILUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction"):
        if keyword in view:
            del view[keyword]
    view.WindowCenter = window.center
    view.WindowWidth = window.width
    view.VOILUTFunction = window.function
    return view


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


@dataclass(frozen=True)
class PixelElement:
    """Where the top-level pixel data element's value lies in the file, as its header states it.

    ``length`` is None for encapsulated (undefined length) data; ``available`` is the number of bytes
    the file holds from ``value_offset`` to its end (so a native value is truncated when it is smaller
    than ``length``). ``in_dataset`` means the value was read into the dataset instead (deflated files).
    """

    keyword: str
    vr: str | None
    length: int | None
    value_offset: int
    available: int
    in_dataset: bool = False


@contextmanager
def _opened(source: str | os.PathLike | BinaryIO) -> Iterator[BinaryIO]:
    # The reasons below never quote the path: file names in PACS exports often carry patient names.
    if hasattr(source, "read"):
        yield source
        return
    try:
        fp = open(source, "rb")  # noqa: SIM115 - closed below, after the frame is read
    except FileNotFoundError as exc:
        raise RenderError("the file does not exist") from exc
    except IsADirectoryError as exc:
        raise RenderError("the path is a directory, not a file") from exc
    except PermissionError as exc:
        raise RenderError("the file cannot be read (permission denied)") from exc
    with fp:
        yield fp


def _read_header(fp: BinaryIO) -> tuple[Dataset, PixelElement]:
    """Read the dataset up to its pixel data and locate that element; raise NoPixelDataError without one.

    The pixel data value itself is not read (except in a deflated file, see below); ``fp`` is left just
    after the element's header.
    """
    start = fp.tell()
    try:
        ds = dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise RenderError("not a DICOM file (no DICOM file meta information)") from exc
    except Exception as exc:
        raise RenderError(
            f"the file is not readable as DICOM (truncated or malformed header: {type(exc).__name__})"
        ) from exc

    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        # One deflate stream holds the whole dataset: pydicom inflates it in memory whatever we ask, so
        # there is no offset in the file to seek to. The syntax is rare for images (it exists for
        # reports); read the whole dataset as before.
        fp.seek(start)
        ds = _read_whole_dataset(fp)
        pixels = pixel_element_in(ds)
    else:
        # dcmread(stop_before_pixels=True) leaves the file at the pixel data element's tag, if any.
        pixels = pixel_element_at(fp, ds)
    if pixels is not None:
        return ds, pixels

    # pydicom reads a file cut short inside the pixel data element's header or its encapsulated value
    # with only a warning, so "no pixel data" must be checked against the bytes.
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


def read_image_header(fp: BinaryIO) -> tuple[Dataset, PixelElement]:
    """Read a DICOM file's header from ``fp`` and locate its pixel data, without reading the value.

    ``fp`` is left after the pixel data element's header. Raises NoPixelDataError for a file without
    an image and RenderError for one that is unreadable or cut short.
    """
    return _read_header(fp)


def _read_whole_dataset(fp: BinaryIO) -> Dataset:
    try:
        return dcmread(fp)
    except Exception as exc:
        raise RenderError(
            f"the file is not readable as DICOM (truncated or malformed header: {type(exc).__name__})"
        ) from exc


def pixel_element_in(ds: Dataset) -> PixelElement | None:
    keyword = next((keyword for keyword in _PIXEL_KEYWORDS if keyword in ds), None)
    if keyword is None:
        return None
    size = len(ds[keyword].value or b"")
    return PixelElement(keyword, ds[keyword].VR, size, 0, size, in_dataset=True)


def pixel_element_at(fp: BinaryIO, ds: Dataset) -> PixelElement | None:
    """Parse the pixel data element header at the file position; None if there is none (or only part)."""
    is_implicit_vr, is_little_endian = ds.original_encoding
    order = "<" if is_little_endian in (True, None) else ">"
    header = fp.read(8)
    if len(header) < 8:
        return None
    group, element = struct.unpack(f"{order}HH", header[:4])
    keyword = _PIXEL_TAG_KEYWORDS.get(group << 16 | element)
    if keyword is None:
        return None
    vr: str | None = None
    if is_implicit_vr:
        (length,) = struct.unpack(f"{order}L", header[4:])
    else:
        vr = header[4:6].decode("ascii", errors="replace")
        if vr in EXPLICIT_VR_LENGTH_32:
            extended = fp.read(4)
            if len(extended) < 4:
                return None
            (length,) = struct.unpack(f"{order}L", extended)
        else:
            (length,) = struct.unpack(f"{order}H", header[6:])
    value_offset = fp.tell()
    end = fp.seek(0, io.SEEK_END)
    fp.seek(value_offset)
    return PixelElement(
        keyword,
        vr,
        None if length == _UNDEFINED_LENGTH else length,
        value_offset,
        end - value_offset,
    )


def _contains_pixel_data_tag(fp: BinaryIO) -> bool:
    overlap = max(len(tag) for tag in _PIXEL_DATA_TAG_BYTES) - 1
    tail = b""
    while chunk := fp.read(1 << 20):
        window = tail + chunk
        if any(tag in window for tag in _PIXEL_DATA_TAG_BYTES):
            return True
        tail = window[-overlap:]
    return False


def decode_frame(
    ds: Dataset, pixels: PixelElement, fp: BinaryIO | None, *, index: int = 0, as_rgb: bool = True
) -> tuple[np.ndarray, str]:
    """Return frame ``index`` and the photometric interpretation of the decoded array (not of the file).

    Only that frame's bytes are read from ``fp``: pydicom's decoders take a file positioned at the pixel
    data value and, asked for one ``index``, seek to that frame (native data) or find it through the
    Extended or Basic Offset Table, or by walking the fragment item headers (encapsulated data). With
    ``pixels.in_dataset`` the value is taken from ``ds`` and ``fp`` is not used. ``as_rgb=False`` keeps
    native YBR data as it is stored (the decoders convert it to RGB by default). Raises RenderError.
    """
    decoder, source, options, transfer_syntax = _decoding(ds, pixels, fp)
    try:
        # The decoder, not pydicom.pixels.pixel_array(), because only it reports the photometric
        # interpretation of what it returns: JPEG baseline and JPEG 2000 YBR come back as RGB.
        array, properties = decoder.as_array(source, index=index, as_rgb=as_rgb, **options)
    except Exception as exc:
        raise _undecodable(transfer_syntax, exc) from exc
    return array, _decoded_photometric(ds, array, properties)


def iter_frames(
    ds: Dataset, pixels: PixelElement, fp: BinaryIO | None, *, as_rgb: bool = True
) -> Iterator[tuple[np.ndarray, str]]:
    """Yield every frame in order with its photometric interpretation, one frame in memory at a time.

    The pixel data is read once, front to back. Same sources and errors as :func:`decode_frame`; a
    frame that cannot be decoded raises RenderError when it is reached.
    """
    decoder, source, options, transfer_syntax = _decoding(ds, pixels, fp)
    frames = decoder.iter_array(source, as_rgb=as_rgb, **options)
    while True:
        try:
            array, properties = next(frames)
        except StopIteration:
            return
        except Exception as exc:
            raise _undecodable(transfer_syntax, exc) from exc
        yield array, _decoded_photometric(ds, array, properties)


def _undecodable(transfer_syntax: UID, exc: Exception) -> RenderError:
    return RenderError(f"the {_syntax_name(transfer_syntax)} pixel data cannot be decoded ({_reason(exc)})")


def _decoding(ds: Dataset, pixels: PixelElement, fp: BinaryIO | None):
    """The decoder, its source and options for the pixel data of ``ds``; checks what can be checked first."""
    missing = [keyword for keyword in _REQUIRED_IMAGE_PIXEL if ds.get(keyword) in (None, "")]
    if missing:
        raise RenderError(f"required image attributes are missing: {', '.join(missing)}")
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and not isinstance(frames, int):
        # An invalid IS stays a str, which pydicom would multiply as a string or fail to convert.
        raise RenderError("(0028,0008) Number of Frames is not a valid integer")

    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not transfer_syntax:
        raise RenderError("the file does not state its transfer syntax, so its pixel data cannot be decoded")
    transfer_syntax = UID(transfer_syntax)
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise RenderError(
            f"transfer syntax {_syntax_name(transfer_syntax)} is not supported for decoding"
        ) from exc
    if not decoder.is_available:
        raise RenderError(
            f"transfer syntax {_syntax_name(transfer_syntax)} needs a decoder that is not installed"
        )

    if decoder.is_native:
        _check_native_length(ds, pixels)
    elif not pixels.in_dataset:
        _check_encapsulated_items(fp, pixels, little_endian=transfer_syntax.is_little_endian)
    source: Dataset | BinaryIO = ds
    options = {}
    if not pixels.in_dataset:
        source = fp
        # What pydicom's decoder takes from a dataset that holds the pixel data, given for a file source.
        options = {
            **as_pixel_options(ds),
            "transfer_syntax_uid": transfer_syntax,
            "pixel_keyword": pixels.keyword,
        }
        if pixels.vr is not None:
            options["pixel_vr"] = pixels.vr
        fp.seek(pixels.value_offset)
    return decoder, source, options, transfer_syntax


_DEFINED_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "HSV",
        "ARGB",
        "CMYK",
        "XYZ",
    }
)


def _photometric_name(value: str) -> str:
    """A defined term of (0028,0004) as it is; anything else is not repeated (it is the file's)."""
    return value if value in _DEFINED_PHOTOMETRIC else "(none)" if not value else "(not a defined term)"


def _syntax_name(uid: UID) -> str:
    """The standard's name of a transfer syntax; never the file's own string for one it does not know."""
    return uid.name if uid.is_transfer_syntax and uid.name != str(uid) else "(unknown)"


def _decoded_photometric(ds: Dataset, array: np.ndarray, properties: dict) -> str:
    photometric = str(properties.get("photometric_interpretation") or ds.get("PhotometricInterpretation", ""))
    samples = 1 if array.ndim == 2 else array.shape[-1]
    if samples == 1 and photometric not in (*_MONOCHROME, "PALETTE COLOR"):
        raise RenderError(f"photometric interpretation {_photometric_name(photometric)} is not supported")
    if samples == 3 and photometric not in ("RGB", *_YBR_FULL):
        raise RenderError(f"photometric interpretation {_photometric_name(photometric)} is not supported")
    if samples not in (1, 3):
        raise RenderError(f"{samples} samples per pixel are not supported")
    return photometric


def _check_native_length(ds: Dataset, pixels: PixelElement) -> None:
    # pydicom checks the length only of a value it holds in memory, and in its own words ("less than
    # expected"); the admin wants the plain word "truncated", and a file source must be checked too.
    try:
        expected = int(get_expected_length(ds, unit="bytes"))
    except Exception as exc:
        raise RenderError(f"the image attributes are missing or invalid ({_reason(exc)})") from exc
    actual = min(pixels.length or 0, pixels.available)
    if actual < expected:
        raise RenderError(f"pixel data is truncated ({actual} of {expected} bytes present)")
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        # pydicom's own check on an in-memory value (PS3.3 C.7.6.3): YBR_FULL_422 native data is 2/3
        # the size of full-resolution colour, so a value that large was stored as RGB or YBR_FULL.
        full_size = expected // 2 * 3
        if actual >= full_size + full_size % 2:
            raise RenderError(
                "the pixel data is a third larger than YBR_FULL_422 allows: (0028,0004) Photometric "
                "Interpretation is probably wrong (RGB or YBR_FULL)"
            )


def _check_encapsulated_items(fp: BinaryIO, pixels: PixelElement, *, little_endian: bool) -> None:
    """Walk the item headers of the encapsulated value, seeking over each item; raise if the file ends first.

    Reads 8 bytes per fragment and no fragment data. A malformed item (an unexpected tag) is left for
    the decoder to report.
    """
    header = struct.Struct("<HHL" if little_endian else ">HHL")
    position = pixels.value_offset
    end = pixels.value_offset + pixels.available
    fp.seek(position)
    while True:
        data = fp.read(header.size)
        if len(data) < header.size:
            raise RenderError("pixel data is truncated (the file ends inside its pixel data element)")
        group, element, length = header.unpack(data)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return
        if tag != _ITEM or length == _UNDEFINED_LENGTH:
            return
        position += header.size + length
        if position > end:
            raise RenderError("pixel data is truncated (the file ends inside its pixel data element)")
        fp.seek(position)


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


def colour_to_8bit_rgb(frame: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
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
