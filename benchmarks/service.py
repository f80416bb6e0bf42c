"""The service as `make run` starts it, for the benchmarks that measure it over HTTP.

``running_service`` migrates a fresh database (SQLite in a temporary directory, or with
``database="postgres"`` a throwaway PostgreSQL started by scripts/pg_test.sh with its normal
durability), makes a user and its token, starts scripts/run.sh on loopback, waits until it answers,
and stops it (as Ctrl-C does) when the block ends.

``BENCH_APP_ROOT`` names another checkout to start (a ``git worktree`` of an older commit, for a
"before" figure); the virtualenv stays this checkout's (``BENCH_VENV`` to change it).
"""

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("BENCH_APP_ROOT") or HERE).resolve()
VENV = Path(os.environ.get("BENCH_VENV") or HERE / ".venv")
PYTHON = str(VENV / "bin/python")


@dataclass
class Service:
    port: int
    token: str
    env: dict
    process: subprocess.Popen
    # The PostgreSQL postmaster's pid when the service runs on PostgreSQL (its backends are its children).
    database_pid: int | None = None

    def manage(self, *args: str) -> str:
        """``manage.py`` on the service's database; its output's last line."""
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )
        return result.stdout.strip().splitlines()[-1]


def wait_until_answers(port: int, path: str, *, alive=lambda: True, tries: int = 150) -> None:
    """Wait (0.2 s between tries) until ``GET path`` on loopback ``port`` gets an answer, or
    ``alive()`` turns false (the server exited: the caller says why), or the tries run out."""
    for _ in range(tries):
        if not alive():
            return
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)


def run_clients(port: int, send, clients: int, seconds: float) -> tuple[int, int, float]:
    """``clients`` threads, each on its own keep-alive connection, calling ``send(conn)`` for
    ``seconds``; ``send`` answers ``(items, status)``. Returns (items of the 200s, other answers,
    elapsed seconds). A connection that fails is replaced and counts as one failed answer."""
    done = [0] * clients
    failed = [0] * clients
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.perf_counter() < deadline:
            try:
                count, status = send(conn)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                count, status = 0, 0
            if status == 200:
                done[index] += count
            else:
                failed[index] += 1
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), sum(failed), time.perf_counter() - start


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def throwaway_postgres() -> Iterator[tuple[str, int]]:
    """A PostgreSQL on loopback with its normal durability (fsync, synchronous commit, full pages).

    Yields its ``DATABASE_URL`` and the postmaster's pid; stops it and removes its data at the end.
    """
    port = free_port()
    # mkdtemp's directory is private; pg_test.sh makes it again, owned by the server's user.
    pg_dir = tempfile.mkdtemp(prefix="bench-pg-")
    subprocess.run(
        [str(HERE / "scripts/pg_test.sh"), "start", pg_dir, str(port)],
        env={**os.environ, "PG_TEST_DURABLE": "1"},
        check=True,
        capture_output=True,
    )
    try:
        postmaster = int((Path(pg_dir) / "data/postmaster.pid").read_text().split()[0])
        yield f"postgres://postgres@127.0.0.1:{port}/postgres", postmaster
    finally:
        subprocess.run([str(HERE / "scripts/pg_test.sh"), "stop", pg_dir], check=False, capture_output=True)


@contextmanager
def running_service(*, port: int, database: str = "sqlite") -> Iterator[Service]:
    """scripts/run.sh on 127.0.0.1:``port`` with a fresh data directory; ``database``: sqlite or postgres."""
    if database not in {"sqlite", "postgres"}:
        raise ValueError(f"database must be sqlite or postgres, not {database!r}")
    # Left in reverse order: the service stops (below) before its PostgreSQL, and both before the files go.
    with tempfile.TemporaryDirectory() as data_dir, ExitStack() as stack:
        env = {
            **os.environ,
            "DICOM_DATA_DIR": data_dir,
            "PORT": str(port),
            "DICOM_SCP_PORT": str(free_port()),
            "DJANGO_LOG_LEVEL": "WARNING",
        }
        env.pop("DATABASE_URL", None)
        database_pid = None
        if database == "postgres":
            env["DATABASE_URL"], database_pid = stack.enter_context(throwaway_postgres())
        subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        process = subprocess.Popen(
            ["scripts/run.sh"],
            cwd=ROOT,
            env={**env, "BIN": str(VENV / "bin")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        service = Service(port=port, token="", env=env, process=process, database_pid=database_pid)
        try:
            service.token = service.manage(
                "shell",
                "-c",
                "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token;"
                f"print(Token.objects.create(user=User.objects.create_user('bench-{uuid.uuid4().hex[:6]}')).key)",
            )
            wait_until_answers(port, "/healthz")
            yield service
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
