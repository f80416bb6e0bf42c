"""What the audit trail costs, and what a flood of unauthenticated requests writes to it.

1. Cost per row of the hash chain: rows written through ``audit.services.record_event`` (lock,
   read of the last hash, SHA-256, insert), against the same rows inserted without the chain, each
   in its own transaction, on a fresh SQLite database and (with ``--postgres``) on a throwaway
   PostgreSQL started by ``scripts/pg_test.sh``. Prints ms per row for both and the difference.
2. A flood: the server of ``make run`` (scripts/run.sh, SQLite, loopback) is sent unauthenticated
   requests from several clients for ``--flood-seconds``; prints the requests sent, the audit rows
   they left, and the sum of those rows' counts (each refusal counted once).

Usage: .venv/bin/python benchmarks/bench_audit.py [--rows 2000] [--postgres] [--flood-seconds 60]
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from service import running_service

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv/bin/python")


def measure_rows(rows: int) -> dict:
    """In this process, on the database of DATABASE_URL (migrated here): ms/row chained and plain."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomsite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from audit import chain
    from audit.models import AuditLog
    from audit.services import Actor, entry, record_event

    call_command("migrate", verbosity=0)
    actor = Actor(user=None, client_address="10.1.2.3")

    def chained() -> None:
        record_event(actor=actor, action=AuditLog.Action.STATUS, success=True, reason="bench")

    def plain() -> None:
        row = entry(actor=actor, action=AuditLog.Action.STATUS, success=True, reason="bench")
        row.prev_hash = row.row_hash = chain.GENESIS
        with transaction.atomic():
            row.save(force_insert=True)

    timings = {}
    for _ in range(2):  # interleaved rounds, best of each
        for name, write in (("chained", chained), ("plain", plain)):
            start = time.perf_counter()
            for _ in range(rows):
                write()
            per_row = (time.perf_counter() - start) * 1000 / rows
            timings[name] = min(per_row, timings.get(name, per_row))
    return {name: round(value, 3) for name, value in timings.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def row_costs(rows: int, database_url: str, label: str, data_dir: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DICOM_DATA_DIR": data_dir,
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [PYTHON, __file__, "--measure-rows", str(rows)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    timings = json.loads(result.stdout.strip().splitlines()[-1])
    extra = timings["chained"] - timings["plain"]
    print(
        f"{label}: {timings['chained']:.3f} ms per chained row, {timings['plain']:.3f} ms per plain insert, "
        f"chain cost {extra:.3f} ms per row ({rows} rows, best of 2 rounds)"
    )


def flood(seconds: float, clients: int) -> None:
    port = free_port()
    with running_service(port=port) as service:
        sent = [0] * clients
        statuses: dict[int, int] = {}
        deadline = time.perf_counter() + seconds

        def client(index: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while time.perf_counter() < deadline:
                path = f"/api/dicom/metadata/{uuid.uuid4()}"
                headers = {"Authorization": "Token not-a-token"} if index % 2 else {}
                try:
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    continue
                sent[index] += 1
                statuses[response.status] = statuses.get(response.status, 0) + 1
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        script = (
            "from django.db.models import Sum; from audit.models import AuditLog; "
            "from audit.services import flush_tallies; import json; "
            "during = AuditLog.objects.count(); flush_tallies(everything=True); "
            "print(json.dumps({'during': during, 'rows': AuditLog.objects.count(), "
            "'counted': AuditLog.objects.aggregate(n=Sum('count'))['n'] or 0}))"
        )
        counted = json.loads(service.manage("shell", "-c", script))
    total = sum(sent)
    print(
        f"flood of {seconds:.0f} s, {clients} clients, unauthenticated (no token / a bad token): "
        f"{total} requests ({', '.join(f'{n} x {code}' for code, n in sorted(statuses.items()))}); "
        f"{counted['during']} audit rows when it ended, {counted['rows']} after the last minute's tallies "
        f"were written; their counts add up to {counted['counted']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--postgres", action="store_true", help="also measure on a throwaway PostgreSQL")
    parser.add_argument("--flood-seconds", type=float, default=60, help="0 skips the flood")
    parser.add_argument("--flood-clients", type=int, default=4)
    parser.add_argument("--measure-rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_rows:
        print(json.dumps(measure_rows(args.measure_rows)))
        return

    with tempfile.TemporaryDirectory() as data_dir:
        row_costs(args.rows, f"sqlite:///{data_dir}/bench.sqlite3", "SQLite (WAL)", data_dir)
    if args.postgres:
        port = free_port()
        pg_dir = tempfile.mkdtemp(prefix="bench-audit-pg-")
        subprocess.run(
            ["scripts/pg_test.sh", "start", pg_dir, str(port)], cwd=ROOT, check=True, capture_output=True
        )
        try:
            with tempfile.TemporaryDirectory() as data_dir:
                row_costs(
                    args.rows, f"postgres://postgres@127.0.0.1:{port}/postgres", "PostgreSQL 15", data_dir
                )
        finally:
            subprocess.run(["scripts/pg_test.sh", "stop", pg_dir], cwd=ROOT, check=False)
    if args.flood_seconds > 0:
        flood(args.flood_seconds, args.flood_clients)


if __name__ == "__main__":
    main()
