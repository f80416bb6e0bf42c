"""Byte-level builders for DICOM test files, including broken and hostile ones.

pydicom will not write a truncated file, a deflate bomb or a dataset nested 10,000 sequences deep, so
these helpers encode elements by hand (explicit VR little endian unless stated). Large files are written
streaming or sparse, so a test never holds them in memory.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

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


# --- burned-in text: the test set of the pixel text scan -----------------------------------------
# Text drawn with PIL's bundled FreeType font into pydicom's own images (native and compressed,
# single- and multi-frame, grey, RGB, palette), plus controls without text. Each case says which
# strings were drawn, so a test can check that none of them can be read after cleaning.


@dataclass(frozen=True)
class Text:
    """One string drawn at ``(x, y)`` with a font of ``size`` pixels, in ``value`` (grey or RGB)."""

    text: str
    x: int
    y: int
    size: int
    value: int | tuple[int, int, int] | None = None  # None: the image's maximum (or white)
    frames: tuple[int, ...] | None = None  # 0-based; None: every frame


@dataclass(frozen=True)
class TextCase:
    """One file of the test set: its name, what was drawn (empty for a control) and how it is stored."""

    name: str
    base: str
    texts: tuple[Text, ...] = ()
    syntax: str = "native"  # native, rle, jpeg2000, jpegls, jpeg (baseline, through PIL)
    burned_in_annotation: str | None = None
    frames: int = 1
    graphics: bool = False  # depth ticks, an arrow, a colour bar and dots (no text)
    monochrome1: bool = False

    @property
    def has_text(self) -> bool:
        return bool(self.texts)

    @property
    def drawn(self) -> tuple[str, ...]:
        return tuple(text.text for text in self.texts)


TEXT_CASES: tuple[TextCase, ...] = (
    TextCase("ct-white-top", "CT_small.dcm", (Text("DOE^JOHN 4471823", 2, 2, 11),)),
    TextCase(
        "ct-grey-bottom-bia-no",
        "CT_small.dcm",
        (Text("ID 99887766", 4, 108, 13, value=1400),),
        burned_in_annotation="NO",
    ),
    TextCase("ct-dark-on-bright", "CT_small.dcm", (Text("SMITH ANNA", 20, 56, 14, value=-1000),)),
    TextCase("ct-monochrome1", "CT_small.dcm", (Text("MRN 55521", 3, 3, 12),), monochrome1=True),
    TextCase("ct-j2k-512", "693_J2KI.dcm", (Text("ROE^RICHARD 1962-03-14", 10, 10, 18),), syntax="jpeg2000"),
    TextCase(
        "ct-512-large-yes",
        "693_J2KI.dcm",
        (Text("ST MARY HOSPITAL", 120, 460, 28),),
        burned_in_annotation="YES",
    ),
    TextCase("mr-small", "MR_small.dcm", (Text("JANE 0042", 1, 1, 9),)),
    TextCase("mr-rle", "MR_small.dcm", (Text("PAT 7781", 2, 50, 10),), syntax="rle"),
    TextCase("ct-jpegls", "CT_small.dcm", (Text("WONG 19570704", 4, 100, 12),), syntax="jpegls"),
    TextCase(
        "ct-multiframe-middle",
        "CT_small.dcm",
        (Text("KOWALSKI 3321", 2, 2, 11, frames=(2,)),),
        frames=5,
    ),
    TextCase("ct-multiframe-all", "CT_small.dcm", (Text("ACC 20231105", 2, 110, 11),), frames=4),
    TextCase(
        "us-rgb-yellow",
        "examples_rgb_color.dcm",
        (Text("MUSTERMANN, ERIKA", 4, 2, 13, value=(255, 230, 0)), Text("0011223344", 220, 2, 13)),
    ),
    TextCase(
        "us-rgb-jpeg",
        "examples_rgb_color.dcm",
        (Text("GARCIA LUIS 03/07/1988", 60, 220, 14, value=(220, 220, 220)),),
        syntax="jpeg",
    ),
    TextCase("us-speckle-text", "speckle", (Text("HOSPITAL CLINIC 12/03/2019", 150, 8, 15),)),
    TextCase(
        "us-rgb-graphics-and-text",
        "speckle",
        (Text("NGUYEN T 778899", 150, 225, 12, value=(0, 255, 255)),),
        graphics=True,
    ),
    TextCase(
        "rgb-low-contrast",
        "SC_rgb_jpeg.dcm",
        (Text("PATEL RAJ 8841", 30, 120, 16, value=(150, 150, 150)),),
        syntax="jpeg",
    ),
    TextCase("palette-text", "palette", (Text("OKAFOR CHIDI 5521", 40, 20, 16),)),
    TextCase(
        "rgb-multiframe-jpeg",
        "examples_rgb_color.dcm",
        (Text("LEE MIN 4402", 5, 5, 13),),
        frames=3,
        syntax="jpeg",
    ),
    # Controls: no text.
    TextCase("control-ct", "CT_small.dcm"),
    TextCase("control-ct-j2k-512", "693_J2KI.dcm", syntax="jpeg2000"),
    TextCase("control-mr", "MR_small.dcm", burned_in_annotation="NO"),
    TextCase("control-mr-rle", "MR_small.dcm", syntax="rle"),
    TextCase("control-ct-jpegls", "CT_small.dcm", syntax="jpegls"),
    TextCase("control-us-speckle", "speckle"),
    TextCase("control-us-graphics", "speckle", graphics=True),
    TextCase("control-us-graphics-jpeg", "speckle", graphics=True, syntax="jpeg"),
    TextCase("control-us-graphics-multiframe", "speckle", graphics=True, frames=3),
    TextCase("control-rgb-jpeg", "SC_rgb_jpeg.dcm", syntax="jpeg"),
    TextCase("control-palette", "palette"),
    TextCase("control-ct-multiframe", "CT_small.dcm", frames=3),
)


def _text_mask(shape: tuple[int, int], text: Text) -> np.ndarray:
    mask = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(mask).text(
        (text.x, text.y), text.text, fill=255, font=ImageFont.load_default(size=text.size)
    )
    return np.asarray(mask) > 127


def _draw_graphics(frame: np.ndarray) -> None:
    """Ultrasound furniture without text: depth ticks, an arrow, a colour bar and a dotted line."""
    rows, columns = frame.shape[:2]
    white = np.array([255, 255, 255], dtype=frame.dtype)[: frame.shape[2]] if frame.ndim == 3 else 255
    for y in range(20, rows - 10, max(8, rows // 12)):
        frame[y : y + 2, columns - 12 : columns - 4] = white  # depth ticks
    canvas = Image.new("L", (columns, rows), 0)
    ImageDraw.Draw(canvas).polygon([(10, rows // 2 - 6), (22, rows // 2), (10, rows // 2 + 6)], fill=255)
    frame[np.asarray(canvas) > 127] = white  # an arrow
    for i, y in enumerate(range(30, min(rows - 10, 130))):
        level = 255 - i * 2
        frame[y, 2:8] = (level, max(0, level - 80), 255 - level) if frame.ndim == 3 else level  # colour bar
    for x in range(40, columns - 40, 6):
        frame[rows // 3, x : x + 1] = white  # dots


def _palette_dataset():
    """A PALETTE COLOR image built from CT_small: grey anatomy as 8-bit indices into a warm LUT."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    values = ds.pixel_array.astype(np.float64)
    indices = np.clip((values - values.min()) / (np.ptp(values) or 1) * 255, 0, 255).astype(np.uint8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ramp = np.arange(256, dtype=np.uint16)
    for colour, lut in (
        ("Red", ramp * 257),
        ("Green", (ramp * 200 // 255) * 257),
        ("Blue", (ramp // 2) * 257),
    ):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            del ds[keyword]
    ds.PixelData = indices.tobytes()
    ds["PixelData"].VR = "OB"
    return ds, indices


def _speckle_dataset():
    """An ultrasound-like RGB image without text: a sector of grey speckle on black, 480 x 640.

    pydicom's own ultrasound images all carry burned-in text, so the text-free ultrasound control is
    made here (from examples_rgb_color's header).
    """
    ds = dcmread(get_testdata_file("examples_rgb_color.dcm"))
    rows, columns = 480, 640
    generator = np.random.default_rng(7)
    y, x = np.mgrid[0:rows, 0:columns]
    radius = np.hypot(x - columns / 2, y + 40)
    angle = np.abs(np.arctan2(x - columns / 2, y + 40))
    sector = (radius > 80) & (radius < 500) & (angle < 0.6)
    speckle = generator.rayleigh(40, size=(rows, columns)) * np.exp(-radius / 600)
    grey = np.clip(speckle * sector, 0, 255).astype(np.uint8)
    ds.Rows, ds.Columns = rows, columns
    # Not the GE LOGIQ whose header this is: the device regions table has an entry for it.
    ds.Manufacturer, ds.ManufacturerModelName = "DICOMSVC test builders", "speckle"
    return ds, np.repeat(grey[..., np.newaxis], 3, axis=2)


def build_text_case(case: TextCase, path: str | os.PathLike[str]) -> str:
    """Write ``case`` to ``path`` as a Part 10 file (with patient attributes); return the path."""
    if case.base == "palette":
        ds, array = _palette_dataset()
    elif case.base == "speckle":
        ds, array = _speckle_dataset()
    else:
        ds = dcmread(get_testdata_file(case.base))
        array = ds.pixel_array
    for _element in ds:
        pass  # every raw element decoded now, with its VR, so the file can be written in another syntax
    photometric = ds.PhotometricInterpretation
    if photometric.startswith("YBR"):
        photometric = "RGB"
    frames = np.stack([array] * case.frames) if case.frames > 1 else array[np.newaxis, ...]
    frames = frames.copy()
    if case.monochrome1:
        top = frames.max()
        frames = (top - frames + frames.min()).astype(frames.dtype)
        photometric = "MONOCHROME1"
    grey = frames.ndim == 3
    high = np.iinfo(frames.dtype).max if grey and ds.BitsStored >= 8 * frames.dtype.itemsize else None
    if grey and high is None:
        high = (
            (1 << int(ds.BitsStored)) - 1
            if ds.PixelRepresentation == 0
            else (1 << (int(ds.BitsStored) - 1)) - 1
        )
    for index, frame in enumerate(frames):
        if case.graphics:
            _draw_graphics(frame)
        for text in case.texts:
            if text.frames is not None and index not in text.frames:
                continue
            mask = _text_mask(frame.shape[:2], text)
            if grey:
                value = high if text.value is None else text.value
                if case.monochrome1 and text.value is None:
                    value = frames.min()
                frame[mask] = value
            else:
                frame[mask] = (255, 255, 255) if text.value is None else text.value
    _store_frames(ds, frames, photometric=photometric, syntax=case.syntax)
    ds.PatientName = "Testcase^Burned"
    ds.PatientID = f"BURN-{case.name}"[:64]
    ds.Modality = ds.get("Modality") or "OT"
    if case.burned_in_annotation is None:
        if "BurnedInAnnotation" in ds:
            del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = case.burned_in_annotation
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def _store_frames(ds, frames: np.ndarray, *, photometric: str, syntax: str) -> None:
    count = frames.shape[0]
    if count > 1:
        ds.NumberOfFrames = count
    elif "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    ds.PhotometricInterpretation = photometric
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if keyword in ds:
            del ds[keyword]
    data = frames if count > 1 else frames[0]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = data.astype(data.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds["PixelData"].is_undefined_length = False
    if syntax == "rle":
        ds.compress(RLELossless, data, encoding_plugin="pydicom")
    elif syntax == "jpeg2000":
        ds.compress(JPEG2000Lossless, data)
    elif syntax == "jpegls":
        ds.compress(JPEGLSLossless, data)  # pyjpegls, a test dependency
    elif syntax == "jpeg":
        fragments = []
        for frame in frames:
            buffer = io.BytesIO()
            mode = "RGB" if frame.ndim == 3 else "L"
            Image.fromarray(frame.astype(np.uint8), mode=mode).save(
                buffer, format="JPEG", quality=92, subsampling=0
            )
            fragments.append(buffer.getvalue())
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.PhotometricInterpretation = "YBR_FULL" if frames.ndim == 4 else "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"


def fresh_instance(name: str = "CT_small.dcm", *, study: str | None = None, series: str | None = None):
    """A bundled pydicom file as a dataset with fresh UIDs (``study`` and ``series`` given to share them)."""
    dataset = dcmread(get_testdata_file(name))
    dataset.StudyInstanceUID = study or generate_uid()
    dataset.SeriesInstanceUID = series or generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def part10_bytes(dataset) -> bytes:
    """``dataset`` written as a Part 10 file (preamble, file meta), as a client sends it."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def search_instance(*, study_uid: str | None = None, series_uid: str | None = None, **attributes) -> bytes:
    """CT_small.dcm as Part 10 bytes with fresh UIDs (or the study and series given) and
    ``attributes`` set by keyword (``PatientName="Doe^Jane"``, ``StudyDate="20240105"``): one
    instance to search for."""
    ds = fresh_instance("CT_small.dcm", study=study_uid, series=series_uid)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return part10_bytes(ds)


def two_series_study(**attributes) -> list[bytes]:
    """Three files of one fresh study in two series (CT_small twice, MR_small once), as Part 10
    bytes, with ``attributes`` set by keyword on each (``PatientID=...``): a peer's study."""
    study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    files = []
    for name, series in (
        ("CT_small.dcm", ct_series),
        ("CT_small.dcm", ct_series),
        ("MR_small.dcm", mr_series),
    ):
        ds = fresh_instance(name, study=study, series=series)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        files.append(part10_bytes(ds))
    return files


def query_identifier(level: str | None = "STUDY", **keys):
    """A C-FIND / C-MOVE / C-GET identifier: ``QueryRetrieveLevel`` (none if ``level`` is None) and
    ``keys`` by keyword (an empty value is a return key)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds
