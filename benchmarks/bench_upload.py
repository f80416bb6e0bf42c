"""Uploads per second against the real server of `make run`, and its peak memory on a 500 MB upload.

Starts scripts/run.sh (gunicorn + db_worker) on SQLite in a temporary data directory, on loopback,
then:
  1. uploads pydicom's CT_small.dcm with 1, 4 and 6 concurrent clients (keep-alive connections) and
     prints uploads/s and how many failed (6 clients is the "no database is locked" check);
  2. uploads with anonymize=true, 1 client, in interleaved rounds: bundled CT and MR files with the
     burned-in text scan (default options) against the same uploads without it
     (accept_burned_in_annotation, which leaves the pixels unchecked), and prints both rates;
  3. uploads a synthetic ~500 MB DICOM file and prints the peak RSS (VmHWM) of the web workers.

Usage: .venv/bin/python benchmarks/bench_upload.py [--seconds 10] [--port 8765] [--big-mb 500]
"""

import argparse
import http.client
import json
import sys
import time
from pathlib import Path

from pydicom.data import get_testdata_file
from service import HERE, running_service
from service import run_clients as service_run_clients

sys.path.insert(0, str(HERE))
from dicom.tests.multipart import CONTENT_TYPE, TAIL, multipart, multipart_head


def post_file(
    conn: http.client.HTTPConnection, token: str, payload: bytes, fields: dict[str, str] | None = None
) -> int:
    body = multipart(payload, study_type="ct", **(fields or {}))
    conn.request(
        "POST",
        "/api/dicom/upload",
        body=body,
        headers={
            "Authorization": f"Token {token}",
            "Content-Type": CONTENT_TYPE,
        },
    )
    response = conn.getresponse()
    response.read()
    return response.status


def run_clients(
    port: int, token: str, payload: bytes, clients: int, seconds: float, fields: dict[str, str] | None = None
) -> tuple[int, int, float]:
    return service_run_clients(
        port, lambda conn: (1, post_file(conn, token, payload, fields)), clients, seconds
    )


# Bundled CT and MR files for the scan's cost on an anonymizing upload: native, RLE, JPEG 2000.
SCAN_FILES = ("CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "MR_small_RLE.dcm", "J2K_pixelrep_mismatch.dcm")
SCAN_MODES = {
    "scan on (default)": {"anonymize": "true"},
    "scan off (accept_burned_in_annotation)": {"anonymize": "true", "accept_burned_in_annotation": "true"},
}


def anonymized_upload_rates(port: int, token: str, seconds: float, rounds: int) -> dict:
    """Uploads/s with anonymize=true per bundled file, with and without the scan; best of interleaved rounds."""
    payloads = {name: Path(get_testdata_file(name)).read_bytes() for name in SCAN_FILES}
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for name, payload in payloads.items():
            for mode, fields in SCAN_MODES.items():
                done, failed, elapsed = run_clients(port, token, payload, 1, seconds, fields)
                if failed:
                    print(f"  {name} {mode}: {failed} uploads failed")
                rate = done / elapsed
                best[(name, mode)] = max(rate, best.get((name, mode), 0.0))
    print(f"anonymize=true, 1 client, uploads/s (best of {rounds} rounds of {seconds:.0f} s):")
    print(f"  {'file':28} " + " ".join(f"{mode:>40}" for mode in SCAN_MODES))
    report = {}
    for name in SCAN_FILES:
        rates = [best[(name, mode)] for mode in SCAN_MODES]
        print(f"  {name:28} " + " ".join(f"{rate:40.1f}" for rate in rates))
        report[name] = dict(zip(SCAN_MODES, [round(rate, 1) for rate in rates], strict=True))
    totals = [len(SCAN_FILES) / sum(1 / best[(name, mode)] for name in SCAN_FILES) for mode in SCAN_MODES]
    print(f"  {'all (harmonic mean)':28} " + " ".join(f"{rate:40.1f}" for rate in totals))
    return report


def write_big_dicom(path: Path, megabytes: int) -> None:
    """A native 16-bit multi-frame image of about `megabytes` MB, written in chunks."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rows = columns = 512
    frame = rows * columns * 2
    frames = max(1, megabytes * 1024 * 1024 // frame)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientID = "BENCH-BIG"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = frames
    header_path = path.with_suffix(".head")
    ds.save_as(header_path, enforce_file_format=True)
    with open(path, "wb") as out:
        out.write(header_path.read_bytes())
        length = frame * frames
        out.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        chunk = bytes(range(256)) * (frame // 256)
        for _ in range(frames):
            out.write(chunk)
    header_path.unlink()


def stream_upload(port: int, token: str, path: Path) -> int:
    head = multipart_head(study_type="big")
    size = len(head) + path.stat().st_size + len(TAIL)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.putrequest("POST", "/api/dicom/upload")
    conn.putheader("Authorization", f"Token {token}")
    conn.putheader("Content-Type", CONTENT_TYPE)
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    conn.send(head)
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            conn.send(chunk)
    conn.send(TAIL)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def children_of(pid: int) -> list[int]:
    result = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().split()
            except OSError:
                continue
            if int(stat[3]) == pid:
                result.append(int(entry.name))
                result.extend(children_of(int(entry.name)))
    return result


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument("--scan-seconds", type=float, default=3, help="per file, mode and round")
    parser.add_argument("--scan-rounds", type=int, default=3)
    args = parser.parse_args()

    with running_service(port=args.port) as service:
        server, token, data_dir = service.process, service.token, service.env["DICOM_DATA_DIR"]
        payload = Path(get_testdata_file("CT_small.dcm")).read_bytes()
        run_clients(args.port, token, payload, 2, 2)  # warm up the workers
        results = {}
        for clients in (1, 4, 6):
            done, failed, elapsed = run_clients(args.port, token, payload, clients, args.seconds)
            results[clients] = {"uploads_per_s": round(done / elapsed, 1), "ok": done, "failed": failed}
            print(
                f"CT_small.dcm, {clients} client(s): {done / elapsed:.1f} uploads/s ({done} ok, {failed} failed)"
            )

        scan_rates = anonymized_upload_rates(args.port, token, args.scan_seconds, args.scan_rounds)
        results["anonymize"] = scan_rates

        big = Path(data_dir) / "big.dcm"
        write_big_dicom(big, args.big_mb)
        workers = children_of(server.pid)
        before = {pid: vm_hwm_kb(pid) for pid in workers}
        start = time.perf_counter()
        status = stream_upload(args.port, token, big)
        elapsed = time.perf_counter() - start
        peaks = {pid: vm_hwm_kb(pid) for pid in workers if Path(f"/proc/{pid}").exists()}
        peak_mb = max(peaks.values()) / 1024
        # The receiving process is the one that grew: each process's peak less its own before.
        growth_mb = max(peaks[pid] - before[pid] for pid in peaks) / 1024
        print(
            f"{big.stat().st_size / 1e6:.0f} MB upload: HTTP {status} in {elapsed:.1f} s; "
            f"peak RSS of any server process {peak_mb:.0f} MB (before: {max(before.values()) / 1024:.0f} MB); "
            f"largest growth of one process {growth_mb:.0f} MB"
        )
        results["big"] = {
            "status": status,
            "seconds": round(elapsed, 1),
            "peak_rss_mb": round(peak_mb),
            "growth_mb": round(growth_mb),
        }
        print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
