"""This service against Orthanc (Debian's package) on the same files, with the same client, in one run.

Starts three servers inside one network namespace of their own (``unshare -n``, loopback only: Orthanc
listens on every interface, and nothing here should be reachable from outside or disturbed by it), and
the client in the same namespace, so that everything talks over that loopback:

- this service as ``make run`` starts it (scripts/run.sh: gunicorn + db_worker) on SQLite, the
  embedded default;
- the same on a throwaway PostgreSQL with its normal durability (fsync, synchronous commit and full
  page writes on; scripts/pg_test.sh with PG_TEST_DURABLE=1);
- Orthanc (``/usr/sbin/Orthanc``) with a configuration generated here: temporary storage, SQLite
  index, HTTP on a loopback port, no DICOM server, no plugins, no authentication; everything else at
  its defaults (it fsyncs each stored file, ``SyncStorageArea``).

Then runs these operations in interleaved rounds (each operation on each server in turn, the order of
the servers rotated each round), with fresh files (new UIDs) for every ingest:

1. ingest small files (~25 KB: pydicom's CT_small and MR_small, as built by the test builders),
   1 client and 4 clients: ours POST /api/dicom/upload, Orthanc POST /instances, both with the raw
   file as the body (``--ours-body multipart``: ours as a multipart form, for older commits);
2. ingest 5 MB files (a 160-frame CT_small), 1 and 4 clients;
3. metadata of small files: ours GET /api/dicom/metadata/{id}, Orthanc GET /instances/{id}/simplified-tags;
4. download small and 5 MB files: ours GET /api/dicom/download/{id}, Orthanc GET /instances/{id}/file;
5. de-identify, synchronous: ours an upload with anonymize=true, Orthanc POST /instances/{id}/anonymize
   (which answers the de-identified file and stores nothing);
6. de-identify in the background: ours POST /api/dicom/anonymize/{id} for each file then GET
   /api/dicom/status/{new id} until every one is completed (and once more with one
   POST /api/dicom/anonymize per study, the batch request, without the scan); Orthanc POST /studies/{id}/anonymize with
   ``{"Asynchronous": true}`` for the studies that hold the same files (the small files come in
   studies of ``--study-size``: 200 files are 4 studies of 50), then GET /jobs/{id} until each is Success;
   5 and 6 each twice for ours: with the default options (every image scanned for burned-in text;
   CT_small's slice goes to the OCR) and with accept_burned_in_annotation=true (no scan; Orthanc never
   scans, so its figure there is the same operation again);
7. once per server, after the rounds: a ``--big-mb`` upload, and how much the process that received it
   grew (the largest growth of one server process: peak RSS less RSS before).

One client harness for all: a thread per client, each with its own keep-alive ``http.client``
connection (TCP_NODELAY), bodies built before the clock starts, ``Accept-Encoding: identity``.

Prints, per operation: files/s (best of the rounds) for each server and the ratio of ours to
Orthanc's; server CPU per file (user + system time from /proc of every server process: run.sh, the
gunicorn master and workers, db_worker and, on PostgreSQL, the postmaster and its backends; Orthanc's
process; over all rounds); and the machine's load during the operation (CPU busy % of all cores from
/proc/stat, and the part of it that was not this benchmark: other work on a shared machine).

Needs root (for the namespace; it re-runs itself through sudo otherwise). Installs nothing: ``make
bench`` installs Debian's ``orthanc`` when it is missing.

Usage: .venv/bin/python benchmarks/compare_orthanc.py [--rounds 3] [--small 1000] [--big-mb 1000]
       .venv/bin/python benchmarks/compare_orthanc.py --quick          # about a minute
       BENCH_APP_ROOT=/tmp/bench-before .venv/bin/python benchmarks/compare_orthanc.py   # another checkout
"""

import argparse
import functools
import http.client
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from service import HERE, ROOT, free_port, running_service

sys.path.insert(0, str(HERE))
from dicom.tests.multipart import CONTENT_TYPE, TAIL, multipart_head
from dicom.tests.orthanc import ORTHANC
from dicom.tests.orthanc import running_orthanc as launch_orthanc

ORTHANC_JOBS_KEPT = 10
# Set in the re-run inside the network namespace.
IN_NAMESPACE = "COMPARE_ORTHANC_NETNS"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVERS = ("ours SQLite", "ours PG", "Orthanc")


# --- files ------------------------------------------------------------------------------------------
# Templates are written once by the test builders, with fixed-length placeholder identifiers; every
# file sent is the template with the placeholders replaced (same lengths, so no element length moves).
# That makes thousands of distinct files in milliseconds, outside the timed part.

UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root
PLACEHOLDERS = {
    "study": UID_PREFIX + "1" * (64 - len(UID_PREFIX)),
    "series": UID_PREFIX + "2" * (64 - len(UID_PREFIX)),
    "sop": UID_PREFIX + "3" * (64 - len(UID_PREFIX)),
    "patient": "BENCH-PATIENT-000000",
}


def fresh_uid() -> str:
    """A UID of exactly 64 characters under pydicom's root (so it can replace a placeholder)."""
    digits = 64 - len(UID_PREFIX)
    return UID_PREFIX + str(10 ** (digits - 1) + secrets.randbelow(9 * 10 ** (digits - 1)))


@dataclass(frozen=True)
class Templates:
    ct: bytes
    mr: bytes
    large: bytes


def build_templates(work: Path) -> Templates:
    sys.path.insert(0, str(ROOT))
    from pydicom import dcmread

    from dicom.tests.services.dicom_builders import TextCase, build_text_case

    cases = {
        "ct": TextCase("bench-ct", "CT_small.dcm"),
        "mr": TextCase("bench-mr", "MR_small.dcm", burned_in_annotation="NO"),
        "large": TextCase("bench-5mb", "CT_small.dcm", frames=160),
    }
    built = {}
    for name, case in cases.items():
        path = work / f"{name}.dcm"
        build_text_case(case, path)
        ds = dcmread(path)
        ds.PatientID = PLACEHOLDERS["patient"]
        ds.StudyInstanceUID = PLACEHOLDERS["study"]
        ds.SeriesInstanceUID = PLACEHOLDERS["series"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = PLACEHOLDERS["sop"]
        ds.save_as(path, enforce_file_format=True)
        built[name] = path.read_bytes()
        path.unlink()
    return Templates(**built)


def instance(template: bytes, *, study: str, series: str, patient: str) -> bytes:
    return (
        template.replace(PLACEHOLDERS["study"].encode(), study.encode())
        .replace(PLACEHOLDERS["series"].encode(), series.encode())
        .replace(PLACEHOLDERS["sop"].encode(), fresh_uid().encode())
        .replace(PLACEHOLDERS["patient"].encode(), patient.encode())
    )


def small_files(templates: Templates, count: int, *, study_size: int) -> list[bytes]:
    """``count`` files, CT and MR in turn, in studies of ``study_size`` (a CT and an MR series each)."""
    files = []
    for start in range(0, count, study_size):
        study = fresh_uid()
        patient = f"BENCH-{secrets.token_hex(7).upper()}"  # as long as the placeholder
        series = {"ct": fresh_uid(), "mr": fresh_uid()}
        for index in range(start, min(count, start + study_size)):
            kind = "ct" if index % 2 == 0 else "mr"
            files.append(
                instance(getattr(templates, kind), study=study, series=series[kind], patient=patient)
            )
    return files


def large_files(templates: Templates, count: int) -> list[bytes]:
    study, series = fresh_uid(), fresh_uid()
    patient = f"BENCH-{secrets.token_hex(7).upper()}"
    return [instance(templates.large, study=study, series=series, patient=patient) for _ in range(count)]


def write_big_file(path: Path, megabytes: int) -> int:
    """A native CT of about ``megabytes`` MB (CT_small's 128x128 frames, zeros, sparse on disk); its size."""
    sys.path.insert(0, str(ROOT))
    from pydicom import dcmread

    from dicom.tests.services.dicom_builders import TextCase, build_text_case, element_header

    build_text_case(TextCase("bench-big", "CT_small.dcm"), path)
    ds = dcmread(path)
    frame = ds.Rows * ds.Columns * 2
    ds.NumberOfFrames = max(1, megabytes * 1024 * 1024 // frame)
    del ds.PixelData
    if 0xFFFCFFFC in ds:
        del ds[0xFFFCFFFC]  # trailing padding: the pixel data goes last
    ds.save_as(path, enforce_file_format=True)
    length = frame * int(ds.NumberOfFrames)
    with open(path, "ab") as out:
        out.write(element_header(0x7FE00010, "OW", length))
        out.truncate(out.tell() + length)
    return path.stat().st_size


# --- the servers --------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    ours: bool
    roots: Callable[[], list[int]]  # pids whose process trees are the server
    token: str = ""
    multipart: bool = False  # ours: uploads as a multipart form instead of the raw file


@contextmanager
def running_orthanc(*, port: int) -> Iterator[Server]:
    """Orthanc on ``port`` with its own configuration and storage in a temporary directory."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-orthanc-") as work,
        launch_orthanc(Path(work) / "bench", HttpPort=port) as orthanc,
    ):
        yield Server("Orthanc", port, ours=False, roots=lambda: [orthanc.process.pid])


@contextmanager
def running_ours(*, database: str, multipart: bool) -> Iterator[Server]:
    port = free_port()
    with running_service(port=port, database=database) as service:
        name = "ours SQLite" if database == "sqlite" else "ours PG"
        roots = [service.process.pid] + ([service.database_pid] if service.database_pid else [])
        yield Server(name, port, ours=True, roots=lambda: roots, token=service.token, multipart=multipart)


# --- /proc -----------------------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks of the process and of its children it has waited for)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, ... utime (14th field of the line), stime, cutime, cstime.
        table[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return table


def tree(table: dict[int, tuple[int, int]], roots: list[int]) -> set[int]:
    """``roots`` and their descendants (each once: a root may be another's descendant)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    pending = [pid for pid in roots if pid in table]
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return found


def cpu_ticks(table: dict[int, tuple[int, int]], roots: list[int]) -> int:
    """CPU of the processes under ``roots``; a process that exited counts in its parent's children time."""
    return sum(table[pid][1] for pid in tree(table, roots))


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of all cores since boot (busy: neither idle nor waiting for I/O)."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already in user
    return total - values[3] - values[4], total


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the client harness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: tuple[bytes, ...] = ()  # sent one part after another: a shared payload is not copied
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Answer:
    status: int
    body: bytes = b""
    size: int = 0


class Client:
    """One keep-alive connection, counting how many it had to open.

    A connection the server closed (``Connection: close``, or idle too long: Orthanc keeps one for
    1 s) is opened again; a request that found it closed is sent once more.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.opened = 0

    def connect(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)
        self.conn.connect()
        # Bodies go in several sends (head, payload, tail): no Nagle wait between them.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1

    def send(self, call: Call, *, keep_body: bool = True) -> Answer:
        for attempt in (1, 2):
            if self.conn is None:
                self.connect()
            try:
                return self._send(call, keep_body=keep_body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    return Answer(status=0)
        raise AssertionError("unreachable")

    def _send(self, call: Call, *, keep_body: bool) -> Answer:
        conn = self.conn
        conn.putrequest(call.method, call.path, skip_accept_encoding=True)
        conn.putheader("Accept-Encoding", "identity")
        for name, value in call.headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(sum(len(part) for part in call.body)))
        conn.endheaders(call.body[0] if call.body else None)
        for part in call.body[1:]:
            conn.send(part)
        response = conn.getresponse()
        size, kept = 0, []
        while block := response.read(1024 * 1024):
            size += len(block)
            if keep_body:
                kept.append(block)
        if response.will_close:
            self.close()
        return Answer(status=response.status, body=b"".join(kept), size=size)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Driven:
    answers: list[Answer]
    seconds: float
    connections: int


def drive(port: int, calls: list[Call], clients: int, *, keep_body: bool = True) -> Driven:
    """Send ``calls`` from ``clients`` threads, each taking the next call; answers in call order.

    The clock runs from the moment every client is connected to the last answer.
    """
    answers: list[Answer] = [Answer(status=0)] * len(calls)
    sessions = [Client(port) for _ in range(clients)]
    for session in sessions:
        session.connect()
    next_call = itertools.count()
    ready = threading.Barrier(clients + 1)

    def run(session: Client) -> None:
        ready.wait()
        while (index := next(next_call)) < len(calls):  # count's next is atomic under the GIL
            answers[index] = session.send(calls[index], keep_body=keep_body)

    threads = [threading.Thread(target=run, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    for session in sessions:
        session.close()
    return Driven(answers, seconds, sum(session.opened for session in sessions))


# --- the operations ----------------------------------------------------------------------------------

DEID_DEFAULT: dict[str, bool] = {}
# The burned-in text scan off: the pixels are kept unchecked (Orthanc never looks at them).
DEID_NO_SCAN = {"accept_burned_in_annotation": True}


def upload_call(server: Server, payload: bytes, *, deid: dict[str, bool] | None = None) -> Call:
    """Orthanc and ours: the raw file (ours: the fields as query parameters), or for ours with
    ``--ours-body multipart`` a form; ``anonymize=true`` with ``deid``'s options if given."""
    if not server.ours:
        return Call("POST", "/instances", (payload,), (("Content-Type", "application/dicom"),))
    fields = {"study_type": "bench", "anonymize": "false" if deid is None else "true"}
    fields |= {name: str(value).lower() for name, value in (deid or {}).items()}
    if not server.multipart:
        return Call(
            "POST",
            f"/api/dicom/upload?{urlencode(fields)}",
            (payload,),
            (("Authorization", f"Token {server.token}"), ("Content-Type", "application/dicom")),
        )
    return Call(
        "POST",
        "/api/dicom/upload",
        (multipart_head(**fields), payload, TAIL),
        (("Authorization", f"Token {server.token}"), ("Content-Type", CONTENT_TYPE)),
    )


def json_call(server: Server, method: str, path: str, body: dict | None = None) -> Call:
    headers = (("Authorization", f"Token {server.token}"),) if server.ours else ()
    if body is None:
        return Call(method, path, headers=headers)
    return Call(method, path, (json.dumps(body).encode(),), (*headers, ("Content-Type", "application/json")))


ORTHANC_READS = {"metadata": "simplified-tags", "download": "file"}


def read_call(server: Server, what: str, file_id: str) -> Call:
    """``what``: metadata or download."""
    if server.ours:
        return json_call(server, "GET", f"/api/dicom/{what}/{file_id}")
    return Call("GET", f"/instances/{file_id}/{ORTHANC_READS[what]}")


@dataclass
class Stored:
    """What one ingest left on a server: ids in the order of the files, and (Orthanc) their studies."""

    ids: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    files: int
    failed: int
    seconds: float
    connections: int = 1
    detail: str = ""
    stored: Stored | None = None


def accepted(server: Server, answer: Answer) -> bool:
    if answer.status != 200:
        return False
    if server.ours or not answer.body:
        return answer.size > 0
    # Orthanc answers 200 "AlreadyStored" for an instance it had: the file was not fresh.
    return json.loads(answer.body).get("Status") == "Success"


def first_failure(server: Server, answers: list[Answer]) -> str:
    for answer in answers:
        if not accepted(server, answer):
            # Details name no patient data (ours by design, Orthanc's are generic); the files are synthetic.
            return f"HTTP {answer.status} {answer.body[:200].decode(errors='replace')}"
    return ""


def outcome_of(server: Server, driven: Driven) -> Outcome:
    ok = sum(accepted(server, answer) for answer in driven.answers)
    return Outcome(
        ok,
        len(driven.answers) - ok,
        driven.seconds,
        driven.connections,
        first_failure(server, driven.answers),
    )


def ingest(server: Server, files: list[bytes], clients: int, *, deid: dict | None = None) -> Outcome:
    driven = drive(server.port, [upload_call(server, payload, deid=deid) for payload in files], clients)
    outcome = outcome_of(server, driven)
    outcome.stored = Stored()
    for answer in driven.answers:
        body = json.loads(answer.body) if answer.status == 200 else {}
        outcome.stored.ids.append(body.get("file_id") or body.get("ID") or "")
        outcome.stored.studies.append(body.get("ParentStudy", ""))
    return outcome


def read(server: Server, what: str, ids: list[str]) -> Outcome:
    calls = [read_call(server, what, file_id) for file_id in ids if file_id]
    return outcome_of(server, drive(server.port, calls, 1, keep_body=False))


def orthanc_anonymize(server: Server, ids: list[str]) -> Outcome:
    """Orthanc's synchronous de-identification: it answers the new file and stores nothing."""
    calls = [json_call(server, "POST", f"/instances/{file_id}/anonymize", {}) for file_id in ids if file_id]
    return outcome_of(server, drive(server.port, calls, 1, keep_body=False))


POLL_SECONDS = 0.05


def background_deid(
    server: Server, stored: Stored, files: range, deid: dict, *, batch: bool = False, timeout: float = 900
) -> Outcome:
    """Queue the de-identification of the stored files in ``files``; wait until each is done.

    Ours: one request per file (``batch``: one ``POST /api/dicom/anonymize`` per study, naming its
    files), then each new file's status. Orthanc: one job per study of those files (they are whole
    studies), then the job. The clock runs from the first request to the last completion seen.
    """
    client = Client(server.port)
    start = time.perf_counter()
    done = failed = 0
    detail = ""
    if server.ours and batch:
        pending = []
        by_study: dict[str, list[str]] = {}
        for file_id, study in zip(
            stored.ids[files.start : files.stop], stored.studies[files.start : files.stop], strict=True
        ):
            if file_id:
                by_study.setdefault(study, []).append(file_id)
        for ids in by_study.values():
            answer = client.send(json_call(server, "POST", "/api/dicom/anonymize", {"file_ids": ids, **deid}))
            if answer.status == 200:
                pending.extend(item["anonymized_file_id"] for item in json.loads(answer.body)["files"])
            else:
                failed += len(ids)
                detail = detail or first_failure(server, [answer])
    elif server.ours:
        pending = []
        for file_id in stored.ids[files.start : files.stop]:
            answer = client.send(json_call(server, "POST", f"/api/dicom/anonymize/{file_id}", deid))
            if answer.status == 200:
                pending.append(json.loads(answer.body)["anonymized_file_id"])
            else:
                failed += 1
                detail = detail or first_failure(server, [answer])
    if server.ours:
        # The worker takes jobs in the order they were queued: a sweep stops at the first file still
        # processing, so polling costs the server about one request per sweep, not one per file.
        while pending and time.perf_counter() - start < timeout:
            while pending:
                answer = client.send(json_call(server, "GET", f"/api/dicom/status/{pending[0]}"))
                status = json.loads(answer.body).get("status") if answer.status == 200 else "failed"
                if status == "processing":
                    break
                pending.pop(0)
                if status == "completed":
                    done += 1
                else:
                    failed += 1
                    detail = detail or f"HTTP {answer.status} {answer.body[:200].decode(errors='replace')}"
            if pending:
                time.sleep(POLL_SECONDS)
        failed += len(pending)
    else:
        jobs = {}
        studies = stored.studies[files.start : files.stop]
        for study in dict.fromkeys(study for study in studies if study):
            answer = client.send(
                json_call(server, "POST", f"/studies/{study}/anonymize", {"Asynchronous": True})
            )
            jobs[json.loads(answer.body)["ID"]] = studies.count(study)
        while jobs and time.perf_counter() - start < timeout:
            for job in list(jobs):
                state = json.loads(client.send(json_call(server, "GET", f"/jobs/{job}")).body)
                if state["State"] == "Success":
                    done += jobs.pop(job)
                elif state["State"] == "Failure":
                    failed += jobs.pop(job)
                    detail = detail or state.get("ErrorDescription", "")
            if jobs:
                time.sleep(POLL_SECONDS)
        failed += sum(jobs.values())
    seconds = time.perf_counter() - start
    client.close()
    return Outcome(done, failed, seconds, client.opened, detail)


def big_upload(server: Server, path: Path) -> dict:
    """Stream ``path`` to the server; how long it took and how much the receiving process grew.

    Growth: the largest, over the server's processes, of its peak RSS during the upload less its RSS
    before (the peak is reset through clear_refs where the kernel lets us, and sampled every 20 ms).
    """
    pids = tree(process_table(), server.roots())
    before = {pid: rss_kb(pid) for pid in pids}
    for pid in pids:
        with suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    sampled = dict(before)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            for pid in pids:
                sampled[pid] = max(sampled[pid], rss_kb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    call = upload_call(server, b"")
    # The file's bytes are sent from disk between what comes before and after them (a form's parts).
    head, tail = (call.body[0], call.body[2]) if len(call.body) == 3 else (b"", b"")
    client = Client(server.port)
    client.connect()
    conn = client.conn
    start = time.perf_counter()
    conn.putrequest(call.method, call.path, skip_accept_encoding=True)
    conn.putheader("Accept-Encoding", "identity")
    for name, value in call.headers:
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(head) + path.stat().st_size + len(tail)))
    conn.endheaders(head)
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            conn.send(block)
    conn.send(tail)
    response = conn.getresponse()
    response.read()
    seconds = time.perf_counter() - start
    client.close()
    stop.set()
    sampler.join()
    growth = max(max(sampled[pid], rss_kb(pid, "VmHWM")) - before[pid] for pid in pids if before[pid])
    return {
        "status": response.status,
        "seconds": round(seconds, 2),
        "mb": round(path.stat().st_size / 1e6),
        "growth_mb": round(growth / 1024),
    }


# --- rounds and the table -----------------------------------------------------------------------------

INGEST_SMALL = {1: "ingest small, 1 client", 4: "ingest small, 4 clients"}
INGEST_LARGE = {1: "ingest 5 MB, 1 client", 4: "ingest 5 MB, 4 clients"}
METADATA, DOWNLOAD_SMALL, DOWNLOAD_LARGE = "metadata, small", "download small", "download 5 MB"
DEID_SYNC = {"scan": "de-identify sync", "no scan": "de-identify sync, no scan*"}
DEID_BACKGROUND = {"scan": "de-identify async", "no scan": "de-identify async, no scan*"}
# Ours with one request per study (POST /api/dicom/anonymize) and one worker job per batch of files.
DEID_BACKGROUND_BATCH = "de-identify batch, no scan*"
OPERATIONS = (
    *INGEST_SMALL.values(),
    *INGEST_LARGE.values(),
    METADATA,
    DOWNLOAD_SMALL,
    DOWNLOAD_LARGE,
    *DEID_SYNC.values(),
    *DEID_BACKGROUND.values(),
    DEID_BACKGROUND_BATCH,
)
DEID_OPTIONS = {"scan": DEID_DEFAULT, "no scan": DEID_NO_SCAN}


@dataclass
class Tally:
    """One operation on one server over all rounds."""

    best_rate: float = 0.0
    files: int = 0
    failed: int = 0
    server_ticks: int = 0
    connections: int = 0
    runs: int = 0
    clients: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def cpu_ms(self) -> float | None:
        return self.server_ticks * 1000 / CLOCK_TICKS / self.files if self.files else None


@dataclass
class Load:
    """The machine during one operation, all servers and rounds: CPU ticks busy, of this benchmark, in all."""

    busy: int = 0
    bench: int = 0
    total: int = 0

    @property
    def busy_percent(self) -> float:
        return 100 * self.busy / self.total if self.total else 0.0

    @property
    def others_percent(self) -> float:
        return 100 * max(0, self.busy - self.bench) / self.total if self.total else 0.0


class Bench:
    def __init__(self, servers: list[Server], args: argparse.Namespace, templates: Templates) -> None:
        self.servers = servers
        self.args = args
        self.templates = templates
        self.tallies = {(op, server.name): Tally() for op in OPERATIONS for server in servers}
        self.loads = {op: Load() for op in OPERATIONS}

    @property
    def background_files(self) -> int:
        """``--background`` rounded up to whole studies of ``--study-size`` (Orthanc's jobs are per study)."""
        args = self.args
        studies = -(-min(args.background, args.small) // args.study_size)
        return min(args.small, studies * args.study_size)

    def measure(self, operation: str, server: Server, clients: int, run: Callable[[], Outcome]) -> Outcome:
        everything = [os.getpid()] + [pid for each in self.servers for pid in each.roots()]
        table = process_table()
        server_before, bench_before = cpu_ticks(table, server.roots()), cpu_ticks(table, everything)
        busy_before, total_before = machine_ticks()
        outcome = run()
        busy_after, total_after = machine_ticks()
        table = process_table()
        tally = self.tallies[(operation, server.name)]
        tally.best_rate = max(tally.best_rate, outcome.files / outcome.seconds if outcome.seconds else 0.0)
        tally.files += outcome.files
        tally.failed += outcome.failed
        tally.server_ticks += cpu_ticks(table, server.roots()) - server_before
        tally.connections += outcome.connections
        tally.runs += 1
        tally.clients += clients
        if outcome.detail and len(tally.details) < 3:
            tally.details.append(outcome.detail)
        load = self.loads[operation]
        load.busy += busy_after - busy_before
        load.total += total_after - total_before
        load.bench += cpu_ticks(table, everything) - bench_before
        return outcome

    def round(self, number: int) -> None:
        """Every operation on every server, in turn; the servers' order turns by one each round."""
        args, templates = self.args, self.templates
        shift = number % len(self.servers)
        order = self.servers[shift:] + self.servers[:shift]
        stored: dict[tuple[str, str], Stored] = {}

        def each(operation: str, clients: int, run: Callable[[Server], Outcome]) -> None:
            for server in order:
                outcome = self.measure(operation, server, clients, functools.partial(run, server))
                if outcome.stored is not None:
                    stored[(operation, server.name)] = outcome.stored

        for clients, operation in INGEST_SMALL.items():
            files = {
                server.name: small_files(templates, args.small, study_size=args.study_size)
                for server in order
            }
            each(
                operation,
                clients,
                lambda server, files=files, clients=clients: ingest(server, files[server.name], clients),
            )
        for clients, operation in INGEST_LARGE.items():
            files = {server.name: large_files(templates, args.large) for server in order}
            each(
                operation,
                clients,
                lambda server, files=files, clients=clients: ingest(server, files[server.name], clients),
            )

        def small_ids(server: Server, clients: int = 1) -> list[str]:
            return stored[(INGEST_SMALL[clients], server.name)].ids

        each(METADATA, 1, lambda server: read(server, "metadata", small_ids(server)))
        each(DOWNLOAD_SMALL, 1, lambda server: read(server, "download", small_ids(server)))
        each(
            DOWNLOAD_LARGE,
            1,
            lambda server: read(
                server, "download", [i for op in INGEST_LARGE.values() for i in stored[(op, server.name)].ids]
            ),
        )
        # Ours de-identifies fresh uploads; Orthanc stored instances, the first --deid of the 1-client
        # ingest (the next ones for the second variant, which for Orthanc is the same operation again).
        for offset, (variant, operation) in enumerate(DEID_SYNC.items()):
            files = {
                server.name: small_files(templates, args.deid, study_size=args.study_size)
                for server in order
                if server.ours
            }

            def deid(
                server: Server, files: dict = files, variant: str = variant, offset: int = offset
            ) -> Outcome:
                if server.ours:
                    return ingest(server, files[server.name], 1, deid=DEID_OPTIONS[variant])
                ids = small_ids(server)
                return orthanc_anonymize(
                    server, ids[offset * args.deid : (offset + 1) * args.deid] or ids[: args.deid]
                )

            each(operation, 1, deid)
        # Both of the same files of the 4-client ingest: whole studies, the next ones for the second variant.
        count = self.background_files
        for offset, (variant, operation) in enumerate(DEID_BACKGROUND.items()):
            start = offset * count if (offset + 1) * count <= args.small else 0
            each(
                operation,
                1,
                lambda server, start=start, variant=variant: background_deid(
                    server,
                    stored[(INGEST_SMALL[4], server.name)],
                    range(start, start + count),
                    DEID_OPTIONS[variant],
                ),
            )
        start = 2 * count if 3 * count <= args.small else 0
        each(
            DEID_BACKGROUND_BATCH,
            1,
            lambda server, start=start: background_deid(
                server,
                stored[(INGEST_SMALL[4], server.name)],
                range(start, start + count),
                DEID_OPTIONS["no scan"],
                batch=True,
            ),
        )

    def table(self) -> str:
        names = [server.name for server in self.servers]
        ours = [name for name in names if name != "Orthanc"]
        short = {name: name.removeprefix("ours ") for name in names}
        head = (
            f"{'operation':28}"
            + "".join(f"{name + ' /s':>14}" for name in names)
            + "".join(f"{'ratio ' + short[name]:>14}" for name in ours)
            + "".join(f"{'CPU ms ' + short[name]:>15}" for name in names)
            + f"{'busy %':>8}{'others %':>9}"
        )
        lines = [head, "-" * len(head)]
        for op in OPERATIONS:
            tallies = {name: self.tallies[(op, name)] for name in names}
            orthanc = tallies["Orthanc"].best_rate
            line = f"{op:28}" + "".join(f"{tallies[name].best_rate:14.1f}" for name in names)
            for name in ours:
                line += f"{tallies[name].best_rate / orthanc:13.2f}x" if orthanc else f"{'-':>14}"
            for name in names:
                cpu_ms = tallies[name].cpu_ms
                line += f"{cpu_ms:15.2f}" if cpu_ms is not None else f"{'-':>15}"
            load = self.loads[op]
            lines.append(line + f"{load.busy_percent:8.0f}{load.others_percent:9.0f}")
        return "\n".join(lines)

    def notes(self) -> list[str]:
        """Failures, and connections opened beyond one per client (keep-alive not held)."""
        notes = []
        for (op, name), tally in self.tallies.items():
            if tally.failed:
                notes.append(f"{op}, {name}: {tally.failed} failed; {'; '.join(tally.details)}")
            if tally.connections > tally.clients:
                notes.append(f"{op}, {name}: {tally.connections} connections for {tally.clients} clients")
        return notes

    def figures(self) -> dict:
        return {
            op: {
                name: {
                    "files_per_s": round(self.tallies[(op, name)].best_rate, 1),
                    "cpu_ms_per_file": self.tallies[(op, name)].cpu_ms,
                    "failed": self.tallies[(op, name)].failed,
                }
                for name in SERVERS
            }
            | {
                "busy_percent": round(self.loads[op].busy_percent),
                "others_percent": round(self.loads[op].others_percent),
            }
            for op in OPERATIONS
        }


def warm_up(server: Server, templates: Templates) -> None:
    """Not counted: every web worker imports and opens what it needs, the worker loads the OCR models."""
    outcome = ingest(server, small_files(templates, 24, study_size=12), 4)
    if server.ours:
        ingest(server, small_files(templates, 12, study_size=12), 4, deid=DEID_DEFAULT)
    read(server, "metadata", outcome.stored.ids)
    read(server, "download", outcome.stored.ids)
    background_deid(server, outcome.stored, range(12), DEID_DEFAULT)


def rerun_in_namespace() -> None:
    """Run this script again in a new network namespace with only loopback up (as root, or through sudo)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        sys.exit("needs unshare (util-linux) and ip (iproute2)")
    command = [
        "unshare",
        "--net",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        str(Path(__file__).resolve()),
        *sys.argv[1:],
    ]
    if os.geteuid() != 0:
        # A network namespace of its own needs root; a user namespace would give it, but PostgreSQL
        # run as root there could not switch to its own user.
        if shutil.which("sudo") is None:
            sys.exit("needs root for its network namespace (unshare --net): run it as root or through sudo")
        command = ["sudo", "--preserve-env", *command]
    os.execvpe(command[0], command, {**os.environ, IN_NAMESPACE: "1"})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    parser.add_argument("--small", type=int, help="small files per ingest (default 1000; --quick 100)")
    parser.add_argument("--large", type=int, help="5 MB files per ingest (default 20; --quick 4)")
    parser.add_argument(
        "--deid", type=int, help="files de-identified synchronously (default 200; --quick 40)"
    )
    parser.add_argument(
        "--background", type=int, help="files de-identified in the background (default 200; --quick 50)"
    )
    parser.add_argument("--study-size", type=int, help="small files per study (default 50; --quick 25)")
    parser.add_argument(
        "--big-mb", type=int, help="the big upload's size, 0 skips it (default 1000; --quick 100)"
    )
    parser.add_argument(
        "--ours-body",
        choices=("raw", "multipart"),
        default="raw",
        help="how ours receives uploads: the raw file as Orthanc does (default), or a multipart form "
        "(the only form before the raw upload existed)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    defaults = {
        "rounds": 3,
        "small": 1000,
        "large": 20,
        "deid": 200,
        "background": 200,
        "study_size": 50,
        "big_mb": 1000,
    }
    quick = {
        "rounds": 1,
        "small": 100,
        "large": 4,
        "deid": 40,
        "background": 50,
        "study_size": 25,
        "big_mb": 100,
    }
    for name, value in (quick if args.quick else defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    # Orthanc keeps the last 10 finished jobs (JobsHistorySize, left at its default): with more studies,
    # a job could be forgotten before it is seen finished.
    if -(-min(args.background, args.small) // args.study_size) > ORTHANC_JOBS_KEPT:
        parser.error(f"--background / --study-size: at most {ORTHANC_JOBS_KEPT} studies per variant")
    return args


def describe_checkout() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{ROOT}: {git('log', '-1', '--format=%h %s')[:90]}" + (
        " (and uncommitted changes)" if dirty else ""
    )


def main() -> None:
    args = parse_args()
    if os.environ.get(IN_NAMESPACE) != "1":
        rerun_in_namespace()
    if not Path(ORTHANC).exists():
        sys.exit(f"{ORTHANC} not found: apt-get install orthanc (make bench installs it)")
    started = time.perf_counter()
    print(describe_checkout())
    print(
        f"{args.rounds} round(s); per round and server: {args.small} small files per ingest in studies of "
        f"{args.study_size}, {args.large} x 5 MB per ingest, {args.deid} sync de-identifications per "
        f"variant; ours receives uploads {'as multipart forms' if args.ours_body == 'multipart' else 'raw'}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as work, ExitStack() as stack:
        templates = build_templates(Path(work))
        servers = [
            stack.enter_context(running_ours(database="sqlite", multipart=args.ours_body == "multipart")),
            stack.enter_context(running_ours(database="postgres", multipart=args.ours_body == "multipart")),
            stack.enter_context(running_orthanc(port=free_port())),
        ]
        bench = Bench(servers, args, templates)
        print(
            f"async de-identification: {bench.background_files} files per variant, in whole studies",
            flush=True,
        )
        for server in servers:
            warm_up(server, templates)
        for number in range(args.rounds):
            round_start = time.perf_counter()
            bench.round(number)
            print(
                f"round {number + 1} of {args.rounds}: {time.perf_counter() - round_start:.0f} s", flush=True
            )
        big = {}
        if args.big_mb:
            path = Path(work) / "big.dcm"
            for server in servers:
                write_big_file(path, args.big_mb)  # fresh UIDs for each server
                big[server.name] = big_upload(server, path)
            path.unlink()
    print()
    print(bench.table())
    print(
        "files/s: best of the rounds; ratio: ours / Orthanc; CPU ms: server CPU per file, all rounds; busy %: "
        "all cores during the operation; others %: the part of it that was not this benchmark (other work)\n"
        "* ours with accept_burned_in_annotation=true (pixels not scanned for burned-in text, which Orthanc never "
        "does); Orthanc's figure is its one operation again"
    )
    for note in bench.notes():
        print(f"  {note}")
    for name, result in big.items():
        print(
            f"{result['mb']} MB upload, {name}: HTTP {result['status']} in {result['seconds']:.1f} s; "
            f"the receiving process grew {result['growth_mb']} MB"
        )
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"operations": bench.figures(), "big_upload": big}, indent=1))


if __name__ == "__main__":
    main()
