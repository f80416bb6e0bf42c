"""Time dicom.services.rendering.render_png on pydicom's test files and on large multi-frame files.

Run from the repository root: ``.venv/bin/python benchmarks/bench_render.py [--runs N] [--frames F]``.
Prints the median wall time of N renders (default 20) per bundled file, full size and as a 128 px
thumbnail. Each run reads the file from disk, decodes frame 0 and encodes the PNG, as the admin view
does on a cache miss.

Then it writes two multi-frame files of F frames (default 600) of 512x512 16-bit noise into a
temporary directory, built on disk frame by frame: one uncompressed (~300 MB) and one JPEG 2000
lossless with an empty Basic Offset Table (~250 MB, the worst case for finding frame 0). For each it
prints the wall time and the peak Python allocation (tracemalloc) of one thumbnail render, and the
growth of the process's peak RSS over the render (Linux only: read from /proc). The page cache is
warm: the files were just written.
"""

import argparse
import statistics
import struct
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    generate_uid,
)

from dicom.services.rendering import render_png

# CT_small.dcm: 128x128 16-bit CT, uncompressed. 693_J2KI.dcm: 512x512 16-bit MONOCHROME2, JPEG 2000
# (lossy); the bundled files' other 512x512 J2K, J2K_pixelrep_mismatch.dcm, is a deliberately odd one.
FILES = ("CT_small.dcm", "693_J2KI.dcm")
THUMBNAIL = 128
SIDE = 512


def median_ms(path: str, *, max_size: int | None, runs: int) -> float:
    render_png(path, max_size=max_size)  # warm-up: imports and plugin discovery
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        render_png(path, max_size=max_size)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _header(transfer_syntax: UID, frames: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = SIDE
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _frame(number: int) -> np.ndarray:
    return np.random.default_rng(number).integers(0, 4096, (SIDE, SIDE), dtype=np.uint16)


def write_native(path: Path, frames: int) -> None:
    """Explicit VR Little Endian, frames written one at a time after the header."""
    with open(path, "wb") as fp:
        _header(ExplicitVRLittleEndian, frames).save_as(fp, enforce_file_format=True)
        fp.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, frames * SIDE * SIDE * 2))
        for number in range(frames):
            fp.write(_frame(number).tobytes())


def write_jpeg2000(path: Path, frames: int) -> None:
    """JPEG 2000 lossless, one fragment per frame, empty Basic Offset Table.

    Encoding 600 frames would take a minute, so frame 0 and one other are encoded and the other is
    repeated: only frame 0 is ever decoded, the rest is bytes to skip.
    """
    ds = _header(JPEG2000Lossless, frames)
    encoder = get_encoder(JPEG2000Lossless)
    encoded = [
        encoder.encode(
            _frame(number),
            rows=SIDE,
            columns=SIDE,
            samples_per_pixel=1,
            bits_allocated=16,
            bits_stored=12,
            pixel_representation=0,
            photometric_interpretation="MONOCHROME2",
            number_of_frames=1,
        )
        for number in (0, 1)
    ]
    with open(path, "wb") as fp:
        ds.save_as(fp, enforce_file_format=True)
        fp.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
        fp.write(struct.pack("<HHL", 0xFFFE, 0xE000, 0))  # empty Basic Offset Table
        for number in range(frames):
            fragment = encoded[min(number, 1)]
            fragment += b"\x00" * (len(fragment) % 2)
            fp.write(struct.pack("<HHL", 0xFFFE, 0xE000, len(fragment)))
            fp.write(fragment)
        fp.write(struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))


def _peak_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def large_file_figures(path: Path) -> tuple[float, float, float]:
    """Time (ms), tracemalloc peak (MB) and peak-RSS growth (MB) of one thumbnail render of ``path``."""
    # Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM) to its current RSS.
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = _peak_rss_kib()
    tracemalloc.start()
    start = time.perf_counter()
    render_png(path, max_size=THUMBNAIL)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = _peak_rss_kib() - rss_before
    return elapsed * 1000, peak / 2**20, rss_growth / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    print(f"median of {args.runs} runs per figure")
    print(f"{'file':<16} {'size':>9} {'syntax':<28} {'full':>9} {f'thumb {THUMBNAIL}':>10}")
    for name in FILES:
        path = get_testdata_file(name)
        header = dcmread(path, stop_before_pixels=True)
        size = f"{header.Columns}x{header.Rows}"
        syntax = header.file_meta.TransferSyntaxUID.name
        full = median_ms(path, max_size=None, runs=args.runs)
        thumb = median_ms(path, max_size=THUMBNAIL, runs=args.runs)
        print(f"{name:<16} {size:>9} {syntax:<28.28} {full:>7.1f}ms {thumb:>8.1f}ms")

    print(f"\none {THUMBNAIL} px thumbnail of a {args.frames}-frame {SIDE}x{SIDE} 16-bit file")
    print(f"{'file':<22} {'on disk':>9} {'time':>9} {'py peak':>9} {'rss growth':>11}")
    with tempfile.TemporaryDirectory() as directory:
        for name, write in (("native.dcm", write_native), ("jpeg2000-no-bot.dcm", write_jpeg2000)):
            path = Path(directory) / name
            write(path, args.frames)
            size_mb = path.stat().st_size / 2**20
            elapsed, peak, rss = large_file_figures(path)
            print(f"{name:<22} {size_mb:>7.0f}MB {elapsed:>7.1f}ms {peak:>7.1f}MB {rss:>9.1f}MB")
            path.unlink()


if __name__ == "__main__":
    main()
