"""Time validate_dicom_file: µs per file for a few bundled files, and how fast a deflate bomb is refused.

Run from the repository root: ``.venv/bin/python benchmarks/bench_validation.py``.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.data import get_testdata_file

from dicom.services.errors import DeflateBombError
from dicom.services.validation import validate_dicom_file
from dicom.tests.services.dicom_builders import write_deflate_bomb, write_native_image

WANTED = [0x00100020, 0x00100010, 0x00080060, 0x0020000D, 0x0020000E, 0x00080018, 0x00280010, 0x00280011]
BOUND = 500 * 1024 * 1024
FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "rtplan.dcm",
]


def per_file_us(path: str, *, repeat: int = 2000) -> float:
    validate_dicom_file(path, wanted_tags=WANTED, max_inflated_size=BOUND)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat // 5):
            validate_dicom_file(path, wanted_tags=WANTED, max_inflated_size=BOUND)
        best = min(best, (time.perf_counter() - started) / (repeat // 5))
    return best * 1e6


def main() -> None:
    for name in FILES:
        path = get_testdata_file(name)
        size = os.path.getsize(path)
        print(f"{name:28s} {size:>9,d} B  {per_file_us(path):8.1f} µs/file (best of 5)")
    with tempfile.TemporaryDirectory() as tmp:
        large = os.path.join(tmp, "large.dcm")
        size = write_native_image(large, rows=512, columns=512, frames=1000)  # 500 MiB, sparse
        label = "synthetic native 512x512x1000"
        print(f"{label:28s} {size:>9,d} B  {per_file_us(large, repeat=50):8.1f} µs/file")
        bomb = os.path.join(tmp, "bomb.dcm")
        started = time.perf_counter()
        size = write_deflate_bomb(bomb, 600 * 1024 * 1024)
        built = time.perf_counter() - started
        started = time.perf_counter()
        try:
            validate_dicom_file(bomb, wanted_tags=WANTED, max_inflated_size=BOUND)
        except DeflateBombError as exc:
            detail = exc.detail
        else:
            raise SystemExit("the deflate bomb was accepted")
        elapsed = time.perf_counter() - started
        print(f"deflate bomb: {size:,d} B file, 600 MiB inflated (built in {built:.1f} s)")
        print(f"  rejected in {elapsed * 1000:.0f} ms: {detail}")


if __name__ == "__main__":
    main()
