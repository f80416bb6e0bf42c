"""Instances stored per second: the REST raw upload against STOW-RS, on the real server of `make run`.

Starts scripts/run.sh (gunicorn + db_worker) on SQLite in a temporary data directory (see
benchmarks/service.py), then for 1 and 4 concurrent clients (keep-alive connections) prints
instances/s of:
  1. POST /api/dicom/upload with the file as the body (Content-Type: application/dicom), 1 per request;
  2. POST /dicomweb/studies (multipart/related; type="application/dicom"), 1 instance per request;
  3. the same with 50 instances per request.
and the server's CPU time (all its processes, user + system) per instance stored, a figure the
machine's other load disturbs less than the rates. Every instance sent is distinct (pydicom's CT_small.dcm with its SOP Instance UID rewritten in place,
same length), so STOW-RS's idempotent re-store never short-cuts a request.

Usage: .venv/bin/python benchmarks/bench_stow.py [--seconds 10] [--port 8766] [--file CT_small.dcm]
"""

import argparse
import http.client
import itertools
import json
import os
import sys
import threading
from pathlib import Path

import pydicom
from bench_upload import children_of
from pydicom.data import get_testdata_file
from service import run_clients as service_run_clients
from service import running_service

BOUNDARY = "bench-stow-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


class Payloads:
    """Distinct instances: the base file with its SOP Instance UID replaced by a counter's (same length)."""

    def __init__(self, name: str) -> None:
        path = get_testdata_file(name)
        self.base = Path(path).read_bytes()
        self.uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID).encode()
        self.counter = itertools.count()
        self.lock = threading.Lock()
        self.width = min(12, len(self.uid) - self.uid.rindex(b".") - 2)

    def next(self) -> bytes:
        with self.lock:
            number = next(self.counter)
        tail = b"9" + str(number).zfill(self.width).encode()
        new_uid = self.uid[: len(self.uid) - len(tail)] + tail
        return self.base.replace(self.uid, new_uid)


def multipart(payloads: list[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + payload + b"\r\n" for payload in payloads) + f"--{BOUNDARY}--\r\n".encode()


def rest_raw(conn: http.client.HTTPConnection, token: str, payloads: Payloads) -> tuple[int, int]:
    conn.request(
        "POST",
        "/api/dicom/upload?study_type=ct",
        body=payloads.next(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/dicom"},
    )
    response = conn.getresponse()
    response.read()
    return (1, response.status) if response.status == 200 else (0, response.status)


def stow(per_request: int):
    def send(conn: http.client.HTTPConnection, token: str, payloads: Payloads) -> tuple[int, int]:
        body = multipart([payloads.next() for _ in range(per_request)])
        conn.request(
            "POST",
            "/dicomweb/studies?study_type=ct",
            body=body,
            headers={"Authorization": f"Token {token}", "Content-Type": STOW_TYPE},
        )
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            return 0, response.status
        return len(json.loads(answer)["00081199"]["Value"]), 200

    return send


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of the processes ``pids`` (the server's), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def run_clients(port: int, token: str, send, payloads: Payloads, clients: int, seconds: float):
    """``clients`` threads sending for ``seconds``: (instances stored, failed requests, elapsed)."""
    return service_run_clients(port, lambda conn: send(conn, token, payloads), clients, seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--file", default="CT_small.dcm")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the best is printed")
    parser.add_argument("--clients", default="1,4", help="client counts, comma-separated")
    args = parser.parse_args()

    modes = {
        "REST raw upload, 1/request": rest_raw,
        "STOW-RS, 1/request": stow(1),
        "STOW-RS, 50/request": stow(50),
    }
    payloads = Payloads(args.file)
    counts = [int(count) for count in args.clients.split(",")]
    with running_service(port=args.port) as service:
        run_clients(args.port, service.token, rest_raw, payloads, 2, 2)  # warm up the workers
        run_clients(args.port, service.token, stow(5), payloads, 2, 2)
        pids = [service.process.pid, *children_of(service.process.pid)]
        best: dict[tuple[str, int], float] = {}
        cpu: dict[tuple[str, int], float] = {}
        for _ in range(args.rounds):
            for clients in counts:
                for mode, send in modes.items():
                    before = cpu_seconds(pids)
                    done, failed, elapsed = run_clients(
                        args.port, service.token, send, payloads, clients, args.seconds
                    )
                    used = cpu_seconds(pids) - before
                    if failed:
                        print(f"  {mode}, {clients} client(s): {failed} requests failed")
                    rate = done / elapsed
                    best[(mode, clients)] = max(rate, best.get((mode, clients), 0.0))
                    per_instance = 1000 * used / max(done, 1)
                    cpu[(mode, clients)] = min(per_instance, cpu.get((mode, clients), per_instance))
        print(
            f"{args.file} ({len(payloads.base)} bytes), best of {args.rounds} rounds of {args.seconds:g} s:"
        )
        heads = [f"{count} client(s)" for count in counts]
        print(
            f"  {'':28} {'instances/s':>{13 * len(counts)}}   {'server CPU ms/instance':>{13 * len(counts)}}"
        )
        print(
            f"  {'':28} "
            + "".join(f"{head:>13}" for head in heads)
            + "   "
            + "".join(f"{head:>13}" for head in heads)
        )
        for mode in modes:
            rates = "".join(f"{best[(mode, count)]:13.1f}" for count in counts)
            costs = "".join(f"{cpu[(mode, count)]:13.2f}" for count in counts)
            print(f"  {mode:28} {rates}   {costs}")
        print(
            json.dumps(
                {
                    f"{mode} / {clients} client(s)": {
                        "instances_per_s": round(rate, 1),
                        "server_cpu_ms_per_instance": round(cpu[(mode, clients)], 2),
                    }
                    for (mode, clients), rate in best.items()
                }
            )
        )


if __name__ == "__main__":
    sys.exit(main())
