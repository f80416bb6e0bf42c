"""The burned-in text scan: how well it finds text, what it costs per file, and per upload.

Single process, no Django. Prints:

1. detection on the test set: every ``TEXT_CASES`` case of the test builders (built in a temporary
   directory) plus the ``deid-data`` package's ultrasounds (all with burned-in text) and its photos,
   CTs and X-ray (no text, the controls). A file is positive when ``scan_frames`` (gate on, as the
   engine runs it) finds at least one region. TP/FP/FN/TN, recall, precision, the misclassified files;
2. scan time of the test set, files with text against controls, by modality;
3. scan time per file (decode + gate + OCR when the gate lets the frame through) of every file
   pydicom bundles with pixel data, median of ``--rounds`` interleaved rounds, by modality and
   transfer syntax, and over CT and MR files against the 10 ms budget;
4. ``deidentify_file`` rate on bundled CT and MR files with the scan (default options) and without
   it (``accept_burned_in_annotation``), interleaved rounds, best of each.

The OCR engine is loaded (and its load timed) before anything is timed. The text OCR reads is
patient data: only names, counts, boxes and timings are printed, never what was read.

Usage: ``.venv/bin/python benchmarks/bench_pixel_text.py [--rounds 3] [--set-rounds 1] [--deid-repeat 4]``
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import DATA_ROOT, get_testdata_file
from pydicom.dataset import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dicom.services import ocr, pixel_text
from dicom.services.deid import DeidOptions, deidentify_file
from dicom.services.errors import DicomServiceError
from dicom.services.rendering import pixel_element_in
from dicom.tests.services.dicom_builders import TEXT_CASES, build_text_case

KEY = b"benchmark-key-not-a-secret-0123456789"
BUDGET_MS = 10.0
# Bundled CT and MR files for the de-identification rate: native, RLE and JPEG 2000.
DEID_FILES = ("CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm")


@dataclass
class Sample:
    """One file of the test set: where it comes from, whether it holds text, and its dataset."""

    name: str
    source: str
    has_text: bool
    ds: Dataset

    @property
    def modality(self) -> str:
        return modality_of(self.ds)


def modality_of(ds: Dataset) -> str:
    return str(ds.get("Modality") or "(none)")


def syntax_of(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return uid.name if uid else "(none)"


def scan(ds: Dataset) -> tuple[float, pixel_text.FrameScan]:
    """Seconds and result of the engine's scan of an in-memory dataset: decode, gate, OCR."""
    start = time.perf_counter()
    frames = pixel_text.PixelFrames(ds, pixel_element_in(ds), None)
    result = pixel_text.scan_frames(frames)
    return time.perf_counter() - start, result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def warm_engine() -> None:
    """Load the OCR engine (the first call builds it) and print how long that took."""
    blank = np.zeros((64, 256), dtype=np.uint8)
    start = time.perf_counter()
    ocr.read_lines(blank)
    first = time.perf_counter() - start
    start = time.perf_counter()
    ocr.read_lines(blank)
    warm = time.perf_counter() - start
    print(
        f"OCR engine: first call {first * 1000:.0f} ms (loads the models), the same call warm "
        f"{warm * 1000:.1f} ms: load about {(first - warm) * 1000:.0f} ms, once per process"
    )


# --- the test set -----------------------------------------------------------------------------


def deid_data_samples() -> list[Sample]:
    """deid-data's ultrasounds (text; two are cines in zip files) and its other images (controls)."""
    import deid_data

    root = Path(deid_data.__file__).resolve().parent / "data"
    samples = []
    for path in sorted(root.glob("*/*")):
        if path.suffix not in (".dcm", ".zip"):
            continue
        name = f"{path.parent.name}/{path.name}"
        has_text = path.parent.name == "ultrasounds"
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    ds = pydicom.dcmread(io.BytesIO(archive.read(member)))
                    samples.append(Sample(name, "deid-data", has_text, ds))
        else:
            samples.append(Sample(name, "deid-data", has_text, pydicom.dcmread(path)))
    return samples


def test_set(directory: Path) -> list[Sample]:
    samples = []
    for case in TEXT_CASES:
        path = build_text_case(case, directory / f"{case.name}.dcm")
        samples.append(Sample(case.name, "builders", case.has_text, pydicom.dcmread(path)))
    return samples + deid_data_samples()


def report_detection(samples: list[Sample], rounds: int) -> None:
    found: dict[str, pixel_text.FrameScan] = {}
    times: dict[str, list[float]] = defaultdict(list)
    for _round in range(rounds):
        for sample in samples:
            seconds, result = scan(sample.ds)
            times[sample.name].append(seconds)
            found.setdefault(sample.name, result)

    by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample in samples:
        by_source[sample.source][0 if sample.has_text else 1] += 1
    parts = [f"{source}: {text} with text, {clean} controls" for source, (text, clean) in by_source.items()]
    print(f"\n1. Detection on the test set ({len(samples)} files; {'; '.join(parts)})")
    counts = {"TP": 0, "FP": 0, "FN": 0, "TN": 0}
    missed, false_alarms = [], []
    gate_missed, gate_passed_controls = [], 0
    for sample in samples:
        result = found[sample.name]
        positive = bool(result.regions)
        key = ("T" if positive == sample.has_text else "F") + ("P" if positive else "N")
        counts[key] += 1
        if sample.has_text and not positive:
            missed.append(sample.name)
            if not result.ocr_frames:
                gate_missed.append(sample.name)
        if positive and not sample.has_text:
            false_alarms.append(sample.name)
        if not sample.has_text and result.ocr_frames:
            gate_passed_controls += 1
    recall = counts["TP"] / max(1, counts["TP"] + counts["FN"])
    precision = counts["TP"] / max(1, counts["TP"] + counts["FP"])
    print("   " + "  ".join(f"{key} {value}" for key, value in counts.items()))
    print(f"   recall {recall:.3f}  precision {precision:.3f}")
    print(f"   missed (FN): {', '.join(missed) or 'none'}")
    print(f"   false alarms (FP): {', '.join(false_alarms) or 'none'}")
    controls = sum(not sample.has_text for sample in samples)
    print(
        f"   gate: {len(gate_missed)} file(s) with text stopped by the gate"
        f"{' (' + ', '.join(gate_missed) + ')' if gate_missed else ''}; "
        f"{gate_passed_controls} of {controls} controls passed it to the OCR"
    )

    print(f"\n2. Scan time of the test set, ms per file (median of {rounds} round(s))")
    groups: dict[tuple[str, bool], list[float]] = defaultdict(list)
    for sample in samples:
        groups[(sample.modality, sample.has_text)].append(statistics.median(times[sample.name]))
    print(
        f"   {'modality':<9}{'text: files':>12}{'median':>9}{'max':>9}{'controls: files':>17}{'median':>9}{'max':>9}"
    )
    for modality in sorted({modality for modality, _ in groups}):
        cells = []
        for has_text in (True, False):
            values = groups.get((modality, has_text), [])
            if values:
                cells.append(f"{len(values):>12}{ms(statistics.median(values))}{ms(max(values))}")
            else:
                cells.append(f"{'-':>12}{'':>16}")
        print(f"   {modality:<9}{cells[0]}    {cells[1]}")
    for has_text, label in ((True, "with text"), (False, "controls")):
        values = [statistics.median(times[s.name]) for s in samples if s.has_text == has_text]
        print(f"   all {label}: {len(values)} files, median {ms(statistics.median(values)).strip()} ms")


# --- pydicom's bundled files ------------------------------------------------------------------


def bundled_files() -> list[Path]:
    """The *.dcm files pydicom ships (what get_testdata_files("*.dcm") finds locally, no download)."""
    return sorted((Path(DATA_ROOT) / "test_files").glob("*.dcm"))


def report_bundled(rounds: int) -> None:
    files = bundled_files()
    datasets: dict[str, Dataset] = {}
    skipped: dict[str, list[str]] = defaultdict(list)
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            skipped[f"unreadable ({type(exc).__name__})"].append(path.name)
            continue
        pixels = pixel_element_in(ds)
        if pixels is None:
            skipped["no pixel data"].append(path.name)
            continue
        try:
            # Untimed: checks the frames decode, and loads each decoder plugin before the timing.
            frames = pixel_text.PixelFrames(ds, pixels, None)
            for index in pixel_text.frames_to_scan(frames.number_of_frames):
                frames.display(index)
        except Exception as exc:
            skipped[f"not decodable ({type(exc).__name__})"].append(path.name)
            continue
        datasets[path.name] = ds

    times: dict[str, list[float]] = defaultdict(list)
    results: dict[str, pixel_text.FrameScan] = {}
    for _round in range(rounds):
        for name, ds in datasets.items():
            seconds, result = scan(ds)
            times[name].append(seconds)
            results[name] = result
    median = {name: statistics.median(values) for name, values in times.items()}

    print(
        f"\n3. Scan time of pydicom's bundled files, ms per file (median of {rounds} rounds): "
        f"{len(datasets)} of {len(files)} files scanned"
    )
    for reason, names in sorted(skipped.items()):
        print(f"   skipped, {reason}: {len(names)} ({', '.join(names)})")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, ds in datasets.items():
        groups[(modality_of(ds), syntax_of(ds))].append(name)
    print(f"   {'modality':<9}{'transfer syntax':<62}{'files':>6}{'median':>9}{'max':>9}{'to OCR':>8}")
    for (modality, syntax), names in sorted(groups.items()):
        values = [median[name] for name in names]
        to_ocr = sum(bool(results[name].ocr_frames) for name in names)
        print(
            f"   {modality:<9}{syntax[:61]:<62}{len(names):>6}"
            f"{ms(statistics.median(values))}{ms(max(values))}{to_ocr:>8}"
        )
    gated = [median[name] for name in datasets if not results[name].ocr_frames]
    ocred = [median[name] for name in datasets if results[name].ocr_frames]
    if gated:
        print(f"   stopped by the gate: {len(gated)} files, median {ms(statistics.median(gated)).strip()} ms")
    if ocred:
        print(f"   passed to the OCR:   {len(ocred)} files, median {ms(statistics.median(ocred)).strip()} ms")
    with_text = [name for name in datasets if results[name].regions]
    print(f"   files with text found: {len(with_text)} ({', '.join(with_text) or 'none'})")

    for label, modalities in (("CT and MR", ("CT", "MR")), ("CT", ("CT",)), ("MR", ("MR",))):
        names = [name for name, ds in datasets.items() if modality_of(ds) in modalities]
        if not names:
            continue
        value = statistics.median(median[name] for name in names) * 1000
        verdict = "within" if value <= BUDGET_MS else "OVER"
        print(
            f"   {label}: {len(names)} files, median {value:.1f} ms ({verdict} the {BUDGET_MS:.0f} ms budget), "
            f"max {max(median[name] for name in names) * 1000:.1f} ms"
        )
    for name, ds in datasets.items():
        if modality_of(ds) in ("CT", "MR") and results[name].ocr_frames:
            lines = len(
                pixel_text.stroke_lines(pixel_text.PixelFrames(ds, pixel_element_in(ds), None).display(0))
            )
            print(
                f"   {modality_of(ds)} file passed to the OCR: {name} ({ds.Rows}x{ds.Columns}, "
                f"{lines} gate line(s) on frame 1), {median[name] * 1000:.0f} ms, "
                f"{len(results[name].regions)} region(s)"
            )


# --- de-identification rate -------------------------------------------------------------------


def report_deid(rounds: int, repeat: int) -> None:
    modes = {"on": DeidOptions(), "off": DeidOptions(accept_burned_in_annotation=True)}
    sources = {name: Path(get_testdata_file(name)).read_bytes() for name in DEID_FILES}
    refused: dict[str, str] = {}
    for name, data in sources.items():  # untimed: warms the decoders, and leaves out refused files
        for options in modes.values():
            try:
                deidentify_file(io.BytesIO(data), io.BytesIO(), options=options, key=KEY)
            except DicomServiceError as exc:
                refused[name] = type(exc).__name__
    files = {name: data for name, data in sources.items() if name not in refused}
    best: dict[str, float] = {}
    per_file: dict[tuple[str, str], float] = {}
    # Interleaved rounds, best of each: a slow moment of the machine hits both modes.
    for _round in range(rounds):
        for mode, options in modes.items():
            total = 0.0
            for name, data in files.items():
                start = time.perf_counter()
                for _ in range(repeat):
                    deidentify_file(io.BytesIO(data), io.BytesIO(), options=options, key=KEY)
                seconds = time.perf_counter() - start
                total += seconds
                per_file[(mode, name)] = min(per_file.get((mode, name), seconds), seconds)
            best[mode] = min(best.get(mode, total), total)

    count = len(files) * repeat
    on, off = count / best["on"], count / best["off"]
    print(
        f"\n4. deidentify_file, in memory, {len(files)} bundled CT/MR files x {repeat} per round, "
        f"best of {rounds} interleaved rounds"
    )
    for name, reason in refused.items():
        print(f"   left out, refused: {name} ({reason})")
    print(f"   scan on (default options):              {on:8.1f} files/s")
    print(f"   scan off (accept_burned_in_annotation): {off:8.1f} files/s")
    print(f"   the scan takes {(1 - on / off) * 100:.0f}% off the rate ({off / on:.1f}x slower)")
    print(f"   {'ms per file':<28}{'scan on':>9}{'scan off':>9}")
    for name in files:
        cells = "".join(f"{per_file[(mode, name)] / repeat * 1000:>9.1f}" for mode in modes)
        print(f"   {name:<28}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Burned-in text scan: detection and cost")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds for the bundled files and the deid rate"
    )
    parser.add_argument("--set-rounds", type=int, default=1, help="rounds for the test set (slow: OCR)")
    parser.add_argument(
        "--deid-repeat", type=int, default=4, help="de-identifications of each file per round"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the start")
    warm_engine()
    with tempfile.TemporaryDirectory() as tmp:
        samples = test_set(Path(tmp))
        report_detection(samples, args.set_rounds)
    del samples
    report_bundled(args.rounds)
    report_deid(args.rounds, args.deid_repeat)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
