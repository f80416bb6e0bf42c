"""Time dicom.services.rendering.render_png on two of pydicom's test files.

Run from the repository root: ``.venv/bin/python benchmarks/bench_render.py [--runs N]``.
Prints the median wall time of N renders (default 20) per file, full size and as a 128 px thumbnail.
Each run reads the file from disk, decodes frame 0 and encodes the PNG, as the admin view does on a
cache miss.
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicom.services.rendering import render_png

# CT_small.dcm: 128x128 16-bit CT, uncompressed. 693_J2KI.dcm: 512x512 16-bit MONOCHROME2, JPEG 2000
# (lossy); the bundled files' other 512x512 J2K, J2K_pixelrep_mismatch.dcm, is a deliberately odd one.
FILES = ("CT_small.dcm", "693_J2KI.dcm")
THUMBNAIL = 128


def median_ms(path: str, *, max_size: int | None, runs: int) -> float:
    render_png(path, max_size=max_size)  # warm-up: imports and plugin discovery
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        render_png(path, max_size=max_size)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
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


if __name__ == "__main__":
    main()
