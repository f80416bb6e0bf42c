"""C-STORE instances/s: our DIMSE node (DICOMSVC, DEID), our REST upload and Orthanc, on the same files.

Starts, inside one network namespace of its own (``unshare -n``, loopback only: Orthanc listens on
every interface), with the clients in the same namespace:

- our DIMSE node, ``manage.py dicom_scp``, on a fresh migrated SQLite database and data directory
  (as the slow tests start it: ``dimse/tests/conftest.py``), the SCU trusted as a loopback peer;
  measured as DICOMSVC (stores the file as received) and as DEID (stores it de-identified with
  ``DICOM_SCP_DEID_OPTIONS``, by default the project's default options);
- our service as ``make run`` starts it (scripts/run.sh: gunicorn + db_worker) on SQLite, for the REST
  raw upload (``POST /api/dicom/upload``, ``Content-Type: application/dicom``);
- Orthanc (``/usr/sbin/Orthanc``) with its DICOM server on, ``TCP_NODELAY=1`` in its environment (the
  DCMTK under its DICOM server then disables Nagle's algorithm: Orthanc 1.10 has no option of its
  own for it; ``TcpNoDelay`` is its HTTP server's), everything else at its defaults (it fsyncs each
  stored file); the same files by C-STORE and, for the REST rows, by ``POST /instances``.

The files are compare_orthanc's small files (~25 KB: pydicom's CT_small and MR_small in turn, as the
test builders build them), fresh UIDs for every run, built and split into file meta and dataset before
the clock starts. The clients:

- ``pynetdicom``: one association per client (TCP_NODELAY on its socket; ``--scu-nagle`` leaves it),
  each sending the next file's dataset bytes as they are (no decoding or re-encoding: the C-STORE
  request primitive given the bytes, as pynetdicom's own ``send_c_store`` does after encoding) and
  waiting for the response; the clock runs from every client associated to the last response;
- ``storescu`` (DCMTK, ``TCP_NODELAY=1``): one process per client, each with its share of the files
  written to a temporary directory; the clock runs from the start of the processes to their end
  (their start-up and association are in it);
- REST: compare_orthanc's harness (a keep-alive ``http.client`` connection per client, TCP_NODELAY).

Operations run in interleaved rounds (each on every server in turn, the order rotated each round).
Prints per operation instances/s (best of the rounds), the ratio of each of ours to Orthanc's (in the
same row: its C-STORE SCP, or for the REST rows its REST upload), server CPU per instance (user +
system time from /proc of the server's processes over all rounds, as compare_orthanc measures it: the
node's process, run.sh's tree, Orthanc's process), and the machine's load (busy % of all cores, and
the part of it that was not this benchmark).

Needs root for the namespace (re-runs itself through sudo otherwise).

Usage: .venv/bin/python benchmarks/bench_dimse.py [--rounds 3] [--files 600] [--clients 1,4]
           [--scu pynetdicom,storescu] [--deid-options accept_burned_in_annotation]
       .venv/bin/python benchmarks/bench_dimse.py --quick      # under a minute
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from compare_orthanc import (
    CLOCK_TICKS,
    Load,
    Outcome,
    Server,
    Tally,
    build_templates,
    cpu_ticks,
    describe_checkout,
    ingest,
    machine_ticks,
    process_table,
    running_ours,
    small_files,
)
from service import HERE

sys.path.insert(0, str(HERE))
from dicom.tests.orthanc import ORTHANC, namespace_command, namespace_unavailable, running_orthanc

IN_NAMESPACE = "BENCH_DIMSE_NETNS"
SCU_AET = "BENCHSCU"
SUCCESS = 0x0000
COLUMNS = ("DICOMSVC", "DEID", "REST", "Orthanc")
OURS = COLUMNS[:-1]


# --- files ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One file, split before the clock starts: what a C-STORE request carries."""

    sop_class: str
    sop_instance: str
    transfer_syntax: str
    dataset: bytes  # the encoded dataset after the file meta
    part10: bytes


def split(data: bytes) -> Instance:
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with BytesIO(data) as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        offset = fp.tell()
    return Instance(
        sop_class=str(meta.MediaStorageSOPClassUID),
        sop_instance=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax=str(meta.TransferSyntaxUID),
        dataset=data[offset:],
        part10=data,
    )


# --- the clients ------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where one column's C-STOREs go, or (``http``) the server its REST uploads go to."""

    column: str
    port: int
    called_ae: str
    roots: Callable[[], list[int]]
    http: Server | None = None


def send_dataset(assoc, instance: Instance, message_id: int) -> int:
    """One C-STORE of ``instance``'s dataset bytes as they are; the response's status (-1: none).

    pynetdicom's ``send_c_store`` takes a Dataset (which it encodes) or a file path (which it reads):
    this is the rest of it, on bytes already in memory (pynetdicom 3.0's own steps, its private
    names included: pause the association's reactor, send, wait for the response, resume it).
    """
    from pynetdicom.dimse_primitives import C_STORE

    request = C_STORE()
    request.MessageID = message_id
    request.Priority = 2
    request.AffectedSOPClassUID = instance.sop_class
    request.AffectedSOPInstanceUID = instance.sop_instance
    request.DataSet = BytesIO(instance.dataset)
    context = assoc._get_valid_context(instance.sop_class, instance.transfer_syntax, "scu")
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(request, context.context_id)
        _, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    return -1 if response is None else int(response.Status)


def pynetdicom_store(target: Target, instances: list[Instance], clients: int, *, nodelay: bool) -> Outcome:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, MRImageStorage

    associations = []
    for _ in range(clients):
        ae = AE(ae_title=SCU_AET)
        for sop_class in (CTImageStorage, MRImageStorage):
            ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", target.port, ae_title=target.called_ae)
        if not assoc.is_established:
            raise RuntimeError(f"{target.column}: association not established")
        if nodelay:
            assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        associations.append(assoc)
    statuses = [-1] * len(instances)
    silences: list[str] = []
    next_file = itertools.count()
    ready = threading.Barrier(clients + 1)

    def run(assoc) -> None:
        ready.wait()
        message_id = itertools.count(1)
        while assoc.is_established and (index := next(next_file)) < len(instances):
            sent = time.perf_counter()
            statuses[index] = send_dataset(assoc, instances[index], next(message_id))
            if statuses[index] == -1:
                state = "still established" if assoc.is_established else "ended"
                silences.append(f"no response in {time.perf_counter() - sent:.1f} s, association {state}")

    threads = [threading.Thread(target=run, args=(assoc,)) for assoc in associations]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    for assoc in associations:
        if assoc.is_established:
            assoc.release()
    outcome = outcome_of_statuses(statuses, seconds, clients)
    outcome.detail = "; ".join(silences[:2]) or outcome.detail
    return outcome


def storescu_store(target: Target, instances: list[Instance], clients: int, work: Path) -> Outcome:
    """``clients`` storescu processes, each with every ``clients``-th file (written beforehand)."""
    shares = []
    for client in range(clients):
        folder = work / f"storescu-{client}"
        folder.mkdir()
        for number, instance in enumerate(instances[client::clients]):
            (folder / f"{number:05}.dcm").write_bytes(instance.part10)
        shares.append(folder)
    command = [
        "storescu",
        "-v",
        "-aet",
        SCU_AET,
        "-aec",
        target.called_ae,
        "+sd",
        "127.0.0.1",
        str(target.port),
    ]
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    processes = [
        subprocess.Popen([*command, str(folder)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for folder in shares
    ]
    logs = [process.communicate()[0].decode(errors="replace") for process in processes]
    seconds = time.perf_counter() - start
    for folder in shares:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    done = sum(log.count("Received Store Response (Success)") for log in logs)
    detail = (
        ""
        if done == len(instances)
        else next((log[-300:] for log in logs if "Success" not in log[-300:]), "")
    )
    return Outcome(done, len(instances) - done, seconds, clients, detail)


def outcome_of_statuses(statuses: list[int], seconds: float, clients: int) -> Outcome:
    done = sum(status == SUCCESS for status in statuses)
    failed = [status for status in statuses if status != SUCCESS]
    detail = f"status 0x{failed[0] & 0xFFFF:04X}" if failed else ""
    return Outcome(done, len(failed), seconds, clients, detail)


# --- rounds and the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    name: str
    client: str  # pynetdicom, storescu or http
    clients: int


class Bench:
    def __init__(
        self, targets: dict[str, list[Target]], args: argparse.Namespace, templates, work: Path
    ) -> None:
        self.targets = targets  # by client kind: the columns it is measured on
        self.args = args
        self.templates = templates
        self.work = work
        self.operations = [
            Operation(
                f"{client}, {clients} {'client' if client == 'http' else 'assoc'}{'s' * (clients > 1)}",
                client,
                clients,
            )
            for client in [*args.scu, "http"]
            for clients in args.clients
        ]
        self.tallies = {(op.name, column): Tally() for op in self.operations for column in COLUMNS}
        self.loads = {op.name: Load() for op in self.operations}
        self.everything = sorted(
            {id(t): t for ts in targets.values() for t in ts}.values(), key=lambda t: t.column
        )

    def files(self, count: int) -> list[Instance]:
        return [split(data) for data in small_files(self.templates, count, study_size=self.args.study_size)]

    def run_one(self, operation: Operation, target: Target, instances: list[Instance]) -> Outcome:
        if operation.client == "http":
            return ingest(target.http, [instance.part10 for instance in instances], operation.clients)
        if operation.client == "storescu":
            return storescu_store(target, instances, operation.clients, self.work)
        return pynetdicom_store(target, instances, operation.clients, nodelay=not self.args.scu_nagle)

    def measure(self, operation: Operation, target: Target) -> None:
        instances = self.files(self.args.files)
        roots = [os.getpid()] + [pid for t in self.everything for pid in t.roots()]
        table = process_table()
        server_before, bench_before = cpu_ticks(table, target.roots()), cpu_ticks(table, roots)
        busy_before, total_before = machine_ticks()
        outcome = self.run_one(operation, target, instances)
        busy_after, total_after = machine_ticks()
        table = process_table()
        tally = self.tallies[(operation.name, target.column)]
        tally.best_rate = max(tally.best_rate, outcome.files / outcome.seconds if outcome.seconds else 0.0)
        tally.files += outcome.files
        tally.failed += outcome.failed
        tally.server_ticks += cpu_ticks(table, target.roots()) - server_before
        tally.runs += 1
        if outcome.detail and len(tally.details) < 3:
            tally.details.append(outcome.detail)
        load = self.loads[operation.name]
        load.busy += busy_after - busy_before
        load.total += total_after - total_before
        load.bench += cpu_ticks(table, roots) - bench_before

    def round(self, number: int) -> None:
        for operation in self.operations:
            targets = self.targets[operation.client]
            shift = number % len(targets)
            for target in targets[shift:] + targets[:shift]:
                self.measure(operation, target)

    def warm_up(self) -> None:
        """Not counted: each server opens what it needs (the node its database, the web workers theirs)."""
        for operation in self.operations:
            if operation.clients == max(self.args.clients):
                for target in self.targets[operation.client]:
                    self.run_one(operation, target, self.files(4 * operation.clients))

    def table(self) -> str:
        """Two tables, one row per operation: instances/s with the ratio to Orthanc and the load;
        server CPU ms per instance."""
        width = 2 + max(15, *(len(column) for column in COLUMNS))
        head = f"{'operation':24}" + "".join(f"{column:>{width}}" for column in COLUMNS)
        rates = [
            "instances/s (ours: the rate and its ratio to Orthanc's in the same row)",
            head + f"{'busy %':>8}{'others %':>9}",
        ]
        cpu = ["server CPU ms per instance", head]
        for op in self.operations:
            tallies = {column: self.tallies[(op.name, column)] for column in COLUMNS}
            orthanc = tallies["Orthanc"].best_rate
            rate_line, cpu_line = f"{op.name:24}", f"{op.name:24}"
            for column, tally in tallies.items():
                cell = cpu_cell = ""
                if tally.runs:
                    cell = f"{tally.best_rate:.1f}"
                    if column != "Orthanc" and orthanc:
                        cell += f" {tally.best_rate / orthanc:6.2f}x"
                    cpu_cell = f"{tally.cpu_ms:.2f}" if tally.cpu_ms is not None else "-"
                rate_line += f"{cell:>{width}}"
                cpu_line += f"{cpu_cell:>{width}}"
            load = self.loads[op.name]
            rates.append(rate_line + f"{load.busy_percent:8.0f}{load.others_percent:9.0f}")
            cpu.append(cpu_line)
        return "\n".join([*rates, "", *cpu])

    def notes(self) -> list[str]:
        return [
            f"{op}, {column}: {tally.failed} failed; {'; '.join(tally.details)}"
            for (op, column), tally in self.tallies.items()
            if tally.failed
        ]

    def figures(self) -> dict:
        return {
            op.name: {
                column: {
                    "instances_per_s": round(self.tallies[(op.name, column)].best_rate, 1),
                    "cpu_ms_per_instance": self.tallies[(op.name, column)].cpu_ms,
                    "failed": self.tallies[(op.name, column)].failed,
                }
                for column in COLUMNS
                if self.tallies[(op.name, column)].runs
            }
            | {
                "busy_percent": round(self.loads[op.name].busy_percent),
                "others_percent": round(self.loads[op.name].others_percent),
            }
            for op in self.operations
        }


# --- main ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    parser.add_argument("--files", type=int, help="files per run (default 600; --quick 100)")
    parser.add_argument("--study-size", type=int, default=50, help="files per study (default 50)")
    parser.add_argument(
        "--clients",
        default="1,4",
        help="associations (HTTP connections for REST) in parallel, a list (default 1,4)",
    )
    parser.add_argument(
        "--scu", default="pynetdicom,storescu", help="the C-STORE clients, a list of pynetdicom and storescu"
    )
    parser.add_argument(
        "--scu-nagle", action="store_true", help="leave Nagle's algorithm on pynetdicom's sockets"
    )
    parser.add_argument(
        "--deid-options",
        help="DICOM_SCP_DEID_OPTIONS for the DEID AE (default: the project's default options)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    for name, (default, quick) in {"rounds": (3, 1), "files": (600, 100)}.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
    args.clients = [int(value) for value in args.clients.split(",")]
    args.scu = [value.strip() for value in args.scu.split(",") if value.strip()]
    if not set(args.scu) <= {"pynetdicom", "storescu"}:
        parser.error("--scu: pynetdicom, storescu or both")
    return args


def main() -> None:
    args = parse_args()
    if os.environ.get(IN_NAMESPACE) != "1":
        if reason := namespace_unavailable():
            sys.exit(reason)
        command = namespace_command([sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]])
        os.execvpe(command[0], command, {**os.environ, IN_NAMESPACE: "1"})
    if not Path(ORTHANC).exists():
        sys.exit(f"{ORTHANC} not found: apt-get install orthanc (make bench installs it)")
    from dimse.tests.conftest import dimse_node

    started = time.perf_counter()
    print(describe_checkout())
    print(
        f"{args.rounds} round(s) of {args.files} files per run (CT_small and MR_small in turn, studies of "
        f"{args.study_size}); clients {args.clients}; SCUs {args.scu}"
        f"{' (Nagle on pynetdicom)' if args.scu_nagle else ''}; DEID options "
        f"{args.deid_options or '(default)'}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    node_env = {"DJANGO_LOG_LEVEL": "WARNING"}
    if args.deid_options is not None:
        node_env["DICOM_SCP_DEID_OPTIONS"] = args.deid_options
    with tempfile.TemporaryDirectory(prefix="bench-dimse-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        templates = build_templates(work)
        node = stack.enter_context(dimse_node(work / "node", **node_env))
        rest = stack.enter_context(running_ours(database="sqlite", multipart=False))
        orthanc = stack.enter_context(
            running_orthanc(
                work / "orthanc", env={"TCP_NODELAY": "1"}, DicomServerEnabled=True, DicomAet="ORTHANC"
            )
        )
        node_roots = lambda: [node.process.pid]  # noqa: E731
        orthanc_roots = lambda: [orthanc.process.pid]  # noqa: E731
        orthanc_http = Server("Orthanc", orthanc.http_port, ours=False, roots=orthanc_roots)
        dimse_targets = [
            Target("DICOMSVC", node.port, "DICOMSVC", node_roots),
            Target("DEID", node.port, "DEID", node_roots),
            Target("Orthanc", orthanc.dicom_port, "ORTHANC", orthanc_roots),
        ]
        targets = {
            "pynetdicom": dimse_targets,
            "storescu": dimse_targets,
            "http": [
                Target("REST", rest.port, "", rest.roots, http=rest),
                Target("Orthanc", orthanc.http_port, "", orthanc_roots, http=orthanc_http),
            ],
        }
        bench = Bench(targets, args, templates, work)
        bench.warm_up()
        for number in range(args.rounds):
            round_start = time.perf_counter()
            bench.round(number)
            print(
                f"round {number + 1} of {args.rounds}: {time.perf_counter() - round_start:.0f} s", flush=True
            )
    print()
    print(bench.table())
    print(
        "instances/s: best of the rounds; Orthanc: its C-STORE SCP, for the http rows its REST POST /instances; "
        "CPU ms: server CPU per instance over all rounds (DICOMSVC and DEID are one node process); busy %: all "
        "cores during the operation; others %: the part that was not this benchmark (other work on the machine). "
        f"CPU ticks are 1/{CLOCK_TICKS} s."
    )
    for note in bench.notes():
        print(f"  {note}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(bench.figures(), indent=1))


if __name__ == "__main__":
    main()
