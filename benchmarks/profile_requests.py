"""Where each millisecond of a request goes: the per-request budget of docs/performance.md.

Starts the service as `make run` does (one web worker, so every request lands in the process being
sampled), drives one kind of request at a time from one keep-alive client, and samples the web
worker with py-spy (the db_worker for the background job). For each kind it prints:

- the server's CPU per request (user + system time of the process, from /proc), and the server
  time per request (the client's round trip minus nothing: one client, so the server is busy with
  this request or idle);
- that server time split into stages, from py-spy's samples of the threads at work (waits on the
  disk, such as fsync, count where they happen; idle threads are not sampled).

A sample is put in a part stage found anywhere in its stack (the burned-in text scan, the
verification pass, fsync), or else in the stage of its outermost frame that belongs to a service
stage (so the database work of the audit row counts as audit), or else of its innermost frame that
belongs to a framework stage (database, authentication, middleware, ...), or else "other".

Usage: .venv/bin/python benchmarks/profile_requests.py [--seconds 6] [--kinds upload,metadata,...]
Needs py-spy (requirements-dev.txt) and the right to trace the process (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service import HERE, running_service

sys.path.insert(0, str(HERE))
from dicom.tests.multipart import CONTENT_TYPE, multipart

ROOT = Path(__file__).resolve().parent.parent
PY_SPY = str(ROOT / ".venv/bin/py-spy")
RATE = 1000  # py-spy samples per second
PAYLOAD = Path(get_testdata_file("CT_small.dcm")).read_bytes()

# (stage, pattern on "function (path)"). Parts of a stage, wherever they are in the stack:
PART_STAGES = [
    ("burned-in text scan", r"\(dicom/services/(pixel_text|ocr)\.py\)"),
    ("verification", r"\(dicom/services/deid/verify\.py\)"),
    ("storage (fsync)", r"_fsync \(dicom/services/storage\.py\)"),
]
# Then the outermost frame of a service stage:
SERVICE_STAGES = [
    ("audit", r"\((audit/(services|chain)\.py)\)"),
    ("de-identification", r"\(dicom/services/deid/"),
    ("validation walk", r"\(dicom/services/validation\.py\)"),
    ("metadata", r"\(dicom/services/metadata\.py\)|masked_metadata|file_metadata"),
    ("multipart", r"\(django/http/multipartparser\.py\)|\(rest_framework/parsers\.py\)"),
    ("storage", r"\(dicom/services/storage\.py\)|\(dicom/uploads\.py\)|_stage_body"),
]
# The job queue holds every job body in its stack: it counts only where no service stage is.
JOB_QUEUE = ("job queue", r"\(django_tasks_db/|\(dicom/services/task_queue\.py\)")
# Looked for from the innermost frame out, when no service stage matched.
FRAMEWORK_STAGES = [
    ("database", r"\(django/db/|\(psycopg2/|sqlite3"),
    ("authentication", r"\(rest_framework/authentication\.py\)|\(dicom/api/authentication\.py\)"),
    ("access rule", r"\(dicom/access\.py\)|\(dicom/services/selectors\.py\)"),
    ("response rendering", r"\(rest_framework/(renderers|response)\.py\)|\(django/http/response\.py\)|json/"),
    ("serializers", r"\(rest_framework/(serializers|fields)\.py\)|\(dicom/api/serializers\.py\)"),
    (
        "middleware",
        r"\(dicomsite/logs\.py\)|\(audit/context\.py\)|\(dicom/health\.py\)|\(whitenoise/|\(django/middleware/"
        r"|\(django/contrib/(sessions|auth|messages)/middleware",
    ),
    (
        "view dispatch",
        r"\(rest_framework/|\(django/core/handlers/|\(django/urls/|\(dicom/api/(views|direct|reads|upload)\.py\)",
    ),
    ("HTTP server", r"\(uvicorn/|\(asyncio/|\(dicomsite/server\.py\)|\(concurrent/futures/|\(asgiref/"),
]


def classify(frames: list[str]) -> str:
    frames = [re.sub(r":\d+\)$", ")", frame) for frame in frames]  # "name (path:line)" -> "name (path)"
    for stage, pattern in PART_STAGES:
        if any(re.search(pattern, frame) for frame in frames):
            return stage
    for frame in frames:  # outermost first
        for stage, pattern in SERVICE_STAGES:
            if re.search(pattern, frame):
                return stage
    if any(re.search(JOB_QUEUE[1], frame) for frame in frames):
        return JOB_QUEUE[0]
    for frame in reversed(frames):
        for stage, pattern in FRAMEWORK_STAGES:
            if re.search(pattern, frame):
                return stage
    return "other"


# Leaf frames of threads that wait for work (py-spy does not always see them as idle).
IDLE = re.compile(r"^(\w+\.)?(_worker|select|wait) \((concurrent/futures/thread|selectors|threading)\.py")


def stages(raw_profile: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if stack and not IDLE.match(frames[-1]):
            counts[classify(frames)] += int(count)
    return counts


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.auth = {"Authorization": f"Token {token}", "Accept-Encoding": "identity"}

    def call(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> dict:
        headers = dict(self.auth)
        if content_type:
            headers["Content-Type"] = content_type
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path} answered {response.status}: {data[:200]!r}")
        return (
            json.loads(data) if response.getheader("Content-Type", "").startswith("application/json") else {}
        )

    def raw_upload(self, query: str = "") -> dict:
        return self.call("POST", f"/api/dicom/upload{query}", PAYLOAD, "application/dicom")

    def multipart_upload(self) -> dict:
        return self.call("POST", "/api/dicom/upload", multipart(PAYLOAD), CONTENT_TYPE)


def sample(pid: int, seconds: float, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            PY_SPY,
            "record",
            "-p",
            str(pid),
            "-r",
            str(RATE),
            "-f",
            "raw",
            "-o",
            str(output),
            "-d",
            str(int(seconds) + 1),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def report(kind: str, counts: collections.Counter, requests: int, elapsed: float, cpu: float) -> None:
    """Each stage's thread time per request (samples at RATE per second), and its share."""
    total = sum(counts.values()) or 1
    print(
        f"\n{kind}: {requests} requests, {elapsed / requests * 1000:.2f} ms each end to end; per request "
        f"server CPU {cpu / requests * 1000:.2f} ms, threads at work {total / RATE / requests * 1000:.2f} ms:"
    )
    for stage, count in counts.most_common():
        print(f"  {stage:22s} {count / RATE / requests * 1000:6.2f} ms  {count / total * 100:5.1f}%")


def profile_requests(service, kind: str, seconds: float, worker: int, workdir: Path) -> None:
    client = Client(service.port, service.token)
    file_id = client.multipart_upload()["file_id"]  # the form every version of the API reads
    actions = {
        "upload": lambda: client.raw_upload(),
        "upload-multipart": client.multipart_upload,
        "upload-anonymize": lambda: client.raw_upload("?anonymize=true"),
        "metadata": lambda: client.call("GET", f"/api/dicom/metadata/{file_id}"),
        "download": lambda: client.call("GET", f"/api/dicom/download/{file_id}"),
        "status": lambda: client.call("GET", f"/api/dicom/status/{file_id}"),
    }
    action = actions[kind]
    for _ in range(30):  # warm: the thread's connection, caches
        action()
    output = workdir / f"{kind}.txt"
    spy = sample(worker, seconds, output)
    time.sleep(0.5)
    cpu_before, started, requests = cpu_seconds(worker), time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        action()
        requests += 1
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(worker) - cpu_before
    spy.wait()
    report(kind, stages(output), requests, elapsed, cpu)


def profile_jobs(service, seconds: float, job_worker: int, workdir: Path, *, scan: bool = True) -> None:
    """Background de-identification: jobs queued in one burst, then the worker sampled draining them.

    ``scan=False`` queues them with accept_burned_in_annotation (no burned-in text scan).
    """
    client = Client(service.port, service.token)
    sources = [client.multipart_upload()["file_id"] for _ in range(200)]
    output = workdir / ("job.txt" if scan else "job-no-scan.txt")
    body = None if scan else json.dumps({"accept_burned_in_annotation": True}).encode()
    kind = None if scan else "application/json"
    cpu_before = cpu_seconds(job_worker)
    derived = [
        client.call("POST", f"/api/dicom/anonymize/{source}", body, kind)["anonymized_file_id"]
        for source in sources
    ]
    spy = sample(job_worker, seconds, output)
    started = time.perf_counter()
    pending = set(derived)
    while pending and time.perf_counter() - started < 120:
        pending = {
            file_id
            for file_id in pending
            if client.call("GET", f"/api/dicom/status/{file_id}")["status"] == "processing"
        }
        time.sleep(0.05)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(job_worker) - cpu_before
    spy.wait()
    done = len(derived) - len(pending)
    report("async job (db_worker)" + ("" if scan else ", no scan"), stages(output), done, elapsed, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--keep", type=Path, help="write py-spy's raw profiles (flamegraph input) here")
    parser.add_argument(
        "--kinds", default="upload,upload-multipart,upload-anonymize,metadata,download,status,job,job-no-scan"
    )
    args = parser.parse_args()
    os.environ["WEB_WORKERS"] = "1"
    with tempfile.TemporaryDirectory() as scratch, running_service(port=args.port) as service:
        workdir = args.keep or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        processes = descendants(service.process.pid)
        web = [pid for pid in processes if "gunicorn" in command_of(pid) and children(pid) == []]
        jobs = [pid for pid in processes if "db_worker" in command_of(pid)]
        print(
            f"service on port {args.port}: web worker {web}, db_worker {jobs}; CT_small.dcm ({len(PAYLOAD)} bytes)"
        )
        for kind in args.kinds.split(","):
            if kind in ("job", "job-no-scan"):
                profile_jobs(service, args.seconds * 3, jobs[0], workdir, scan=kind == "job")
            else:
                profile_requests(service, kind, args.seconds, web[0], workdir)


if __name__ == "__main__":
    main()
