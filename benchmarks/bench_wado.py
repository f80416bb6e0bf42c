"""WADO-RS against the real server of `make run`: what a viewer opening a 300-image CT series waits for.

Starts scripts/run.sh on SQLite in a temporary data directory, on loopback; stores a series of
``--instances`` 512x512 16-bit CT images (built with pydicom from CT_small.dcm's header, fresh UIDs)
through the REST upload, then prints:
  1. the series /metadata time (median of 5 requests, ms) and its size;
  2. frames/s: every instance's frame 1 as a viewer asks for it
     (``multipart/related; type=application/octet-stream; transfer-syntax=*``), 1 connection and
     6 parallel keep-alive connections (a browser's per-host limit);
  3. "viewer open": a second series' metadata (never asked before, so read from the files) then every
     frame over 6 connections, seconds (the under-5 s goal);
  4. instance retrieve/s (``multipart/related; type="application/dicom"``, 1 connection);
  5. rendered/s (JPEG of frame 1, 1 connection) and thumbnails/s.

Usage: .venv/bin/python benchmarks/bench_wado.py [--instances 300] [--port 8767] [--seconds 5]
"""

import argparse
import http.client
import io
import json
import statistics
import threading
import time

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from service import running_service

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def build_series(count: int) -> list[tuple[str, bytes]]:
    """``count`` 512x512 CT slices of one new series: (SOP Instance UID, Part 10 bytes)."""
    template = dcmread(get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 + (yy - 256) ** 2 < 200**2).astype(np.int16) * 1000
    files = []
    for index in range(count):
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        ds.SliceLocation = float(index)
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        ds.Rows = ds.Columns = 512
        pixels = (body + rng.integers(-40, 40, size=(512, 512))).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append((ds.SOPInstanceUID, buffer.getvalue()))
    return files


def request(conn: http.client.HTTPConnection, path: str, token: str, accept: str, body: bytes | None = None):
    headers = {"Authorization": f"Token {token}", "Accept": accept}
    if body is not None:
        headers["Content-Type"] = "application/dicom"
    conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
    return data


def in_parallel(port: int, token: str, paths: list[str], accept: str, connections: int) -> float:
    """Fetch ``paths`` over ``connections`` keep-alive connections; seconds taken."""
    queue = list(reversed(paths))
    lock = threading.Lock()
    errors: list[Exception] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                path = queue.pop()
            try:
                request(conn, path, token, accept)
            except Exception as error:
                errors.append(error)
                break
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    files = build_series(args.instances)
    # A second series for "viewer open", asked for nothing before: no web worker has its metadata.
    unseen = build_series(args.instances)
    with running_service(port=args.port) as service:
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=120)
        start = time.perf_counter()
        rows = [
            json.loads(request(conn, "/api/dicom/upload", service.token, "*/*", data)) for _, data in files
        ]
        print(f"stored {len(rows)} instances of 512x512 in {time.perf_counter() - start:.1f} s")
        for _, data in unseen:
            request(conn, "/api/dicom/upload", service.token, "*/*", data)
        ds = dcmread(io.BytesIO(files[0][1]), stop_before_pixels=True)
        series_url = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        instance_urls = [f"{series_url}/instances/{uid}" for uid, _ in files]

        timings = []
        for _ in range(5):
            start = time.perf_counter()
            metadata = request(conn, f"{series_url}/metadata", service.token, "application/dicom+json")
            timings.append(time.perf_counter() - start)
        assert len(json.loads(metadata)) == args.instances
        print(
            f"series metadata ({args.instances} instances, {len(metadata) / 1e6:.1f} MB): "
            f"first (headers read) {timings[0] * 1000:.0f} ms, then median "
            f"{statistics.median(timings[1:]) * 1000:.0f} ms (originals: a worker keeps only de-identified files' JSON)"
        )
        conn.close()

        frame_paths = [f"{url}/frames/1" for url in instance_urls]
        seconds = in_parallel(service.port, service.token, frame_paths, FRAME_ACCEPT, 1)
        print(f"frames, 1 connection: {len(frame_paths) / seconds:.0f} frames/s")
        seconds = in_parallel(service.port, service.token, frame_paths, FRAME_ACCEPT, 6)
        print(f"frames, 6 connections: {len(frame_paths) / seconds:.0f} frames/s")

        other = dcmread(io.BytesIO(unseen[0][1]), stop_before_pixels=True)
        other_url = f"/dicomweb/studies/{other.StudyInstanceUID}/series/{other.SeriesInstanceUID}"
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=120)
        start = time.perf_counter()
        request(conn, f"{other_url}/metadata", service.token, "application/dicom+json")
        metadata_seconds = time.perf_counter() - start
        paths = [f"{other_url}/instances/{uid}/frames/1" for uid, _ in unseen]
        in_parallel(service.port, service.token, paths, FRAME_ACCEPT, 6)
        print(
            f"viewer open of a series never asked before (metadata {metadata_seconds * 1000:.0f} ms, "
            f"then {len(paths)} frames over 6 connections): {time.perf_counter() - start:.2f} s"
        )

        for label, suffix, accept in (
            ("instance retrieve", "", 'multipart/related; type="application/dicom"'),
            ("rendered (JPEG)", "/rendered", "image/jpeg"),
            ("thumbnail (JPEG)", "/thumbnail", "image/jpeg"),
        ):
            conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=120)
            done, deadline = 0, time.perf_counter() + args.seconds
            start = time.perf_counter()
            while time.perf_counter() < deadline:
                request(conn, instance_urls[done % len(instance_urls)] + suffix, service.token, accept)
                done += 1
            print(f"{label}, 1 connection: {done / (time.perf_counter() - start):.0f}/s")
            conn.close()


if __name__ == "__main__":
    main()
