"""Bulk de-identification throughput: ``anonymize_bulk`` with 1 and 2 local workers and through the queue.

Builds a tree of N files (default 5,000) from pydicom's bundled test files, each with its own
patient, study, series and SOP UIDs, then in one run measures files/s for:

- the floor: plain pydicom read + write of the same files, one process;
- ``anonymize_bulk --from-dir TREE --output-dir OUT --workers 1``;
- the same with ``--workers 2``;
- ``anonymize_bulk --from-dir TREE --output-dir OUT --enqueue`` with two ``db_worker`` processes.

Each command runs as a real ``manage.py`` subprocess against a fresh SQLite database in a
temporary data directory (or ``--database-url`` for PostgreSQL); every mode and round uses a fresh
``--output-dir``, so it is a new run. Time is wall clock from start to exit of the command.

    .venv/bin/python benchmarks/bench_bulk.py [--files 5000] [--rounds 2] [--database-url postgres://...]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

PROJECT = Path(__file__).resolve().parent.parent
SOURCES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "rtplan.dcm",
    "SC_rgb_small_odd.dcm",
    "MR_small_RLE.dcm",
]


def build_tree(root: Path, count: int) -> list[Path]:
    templates = []
    for name in SOURCES:
        dataset = dcmread(get_testdata_file(name))
        if "BurnedInAnnotation" in dataset:
            del dataset.BurnedInAnnotation
        templates.append(dataset)
    paths = []
    for index in range(count):
        dataset = templates[index % len(templates)]
        dataset.PatientName = f"Bench^Patient{index:05d}"
        dataset.PatientID = f"BENCH-{index:05d}"
        dataset.StudyInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        path = root / f"p{index // 500:02d}" / f"s{index // 50:03d}" / f"{index:05d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def floor(paths: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index, path in enumerate(paths):
        dcmread(path).save_as(out / f"{index}.dcm", enforce_file_format=True)
    return len(paths) / (time.perf_counter() - started)


def manage(env: dict, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PROJECT / "manage.py"), *args],
        cwd=PROJECT,
        env=env,
        stdout=kwargs.get("stdout", subprocess.DEVNULL),
        stderr=subprocess.STDOUT,
    )


def timed_bulk(env: dict, tree: Path, out: Path, *extra: str) -> tuple[float, str]:
    log = out.with_suffix(".log")
    with open(log, "wb") as handle:
        started = time.perf_counter()
        process = manage(
            env, "anonymize_bulk", "--from-dir", str(tree), "--output-dir", str(out), *extra, stdout=handle
        )
        process.wait()
        elapsed = time.perf_counter() - started
    text = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"anonymize_bulk {' '.join(extra)} failed:\n{text[-2000:]}")
    summary = next((line for line in text.splitlines() if line.startswith("summary")), "")
    return elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--database-url", default="", help="default: SQLite in the temporary data directory")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each mode keeps its best")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    env = {
        **os.environ,
        "DICOM_DATA_DIR": str(work / "data"),
        "DJANGO_LOG_LEVEL": "WARNING",
        "DICOM_DEID_KEY": "bench-key-0123456789abcdef0123456789abcdef",
        "DATABASE_URL": args.database_url or f"sqlite:///{work / 'data' / 'db.sqlite3'}",
    }
    try:
        tree = work / "tree"
        started = time.perf_counter()
        paths = build_tree(tree, args.files)
        print(f"built {len(paths)} files in {time.perf_counter() - started:.1f}s under {tree}")
        subprocess.run(
            [sys.executable, str(PROJECT / "manage.py"), "migrate", "-v0"], cwd=PROJECT, env=env, check=True
        )
        best: dict[str, float] = {}

        def keep(label: str, rate: float) -> None:
            best[label] = max(best.get(label, 0.0), rate)

        # Rounds interleave the modes and each mode keeps its best round: on a shared machine a
        # burst of someone else's work then lands on one round, not on one mode.
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}, load average {os.getloadavg()[0]:.2f}")
            keep("pydicom read+write (floor)", floor(paths, work / f"floor{round_number}"))
            for label, extra in (("--workers 1", ("--workers", "1")), ("--workers 2", ("--workers", "2"))):
                out = work / f"{label.strip('-').replace(' ', '')}-{round_number}"
                elapsed, summary = timed_bulk(env, tree, out, *extra)
                keep(f"anonymize_bulk {label}", len(paths) / elapsed)
                print(f"  {label}: {elapsed:.1f}s  {summary}")
            workers = [
                manage(
                    env,
                    "db_worker",
                    "--no-reload",
                    "--no-startup-delay",
                    "--interval",
                    "0.2",
                    "--worker-id",
                    f"b{n}",
                )
                for n in range(2)
            ]
            try:
                time.sleep(3)  # let both workers start before the clock runs
                out = work / f"enqueue-{round_number}"
                elapsed, summary = timed_bulk(env, tree, out, "--enqueue", "--poll-interval", "0.25")
                keep("anonymize_bulk --enqueue, 2 db_worker", len(paths) / elapsed)
                print(f"  --enqueue: {elapsed:.1f}s  {summary}")
            finally:
                for worker in workers:
                    worker.terminate()
                    worker.wait(timeout=30)
        rates = best
        print()
        print(f"{'mode (best of rounds)':44} {'files/s':>9}")
        for label, rate in rates.items():
            print(f"{label:44} {rate:9.1f}")
        one, two = rates["anonymize_bulk --workers 1"], rates["anonymize_bulk --workers 2"]
        print(f"\n--workers 2 / --workers 1 = {two / one:.2f}x (target 1.6x); cores: {os.cpu_count()}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
