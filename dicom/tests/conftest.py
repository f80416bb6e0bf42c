"""Fixtures shared by the dicom app's tests: the service started as `make run` starts it, and Chromium."""

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """An S3-compatible server (moto's, in a thread) on a loopback port; its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/api/dicom/status/none")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


class LiveServer:
    """A running ``scripts/run.sh``: its port, a client token, its log file and its process."""

    def __init__(
        self, port: int, token: str, log: Path, script: subprocess.Popen, dimse_port: int = 0
    ) -> None:
        self.port, self.token, self.log, self.script = port, token, log, script
        self.dimse_port = dimse_port  # where its DIMSE node listens

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers=None, *, chunked: bool = False):
        """One request with the token over a new connection: ``(status, body bytes)``."""
        conn = self.connection()
        conn.request(
            method,
            path,
            body=body,
            headers={"Authorization": f"Token {self.token}", **(headers or {})},
            encode_chunked=chunked,
        )
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data


@contextmanager
def embedded_service(tmp_path: Path, **extra_env: str) -> Iterator[LiveServer]:
    """``scripts/run.sh`` (the web server + db_worker) on SQLite under ``tmp_path``, as ``make run`` starts it.

    ``extra_env`` adds or overrides variables (limits, timeouts, worker counts). The token is a new
    ordinary user's; the server's output is in ``tmp_path / "server.log"``. Stopped as Ctrl-C stops
    ``make run``.
    """
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}},
        "DICOM_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(free_port()),
        "DICOM_SCP_PORT": str(free_port()),  # the DIMSE node run.sh starts, one per service
        "BIN": str(Path(sys.executable).parent),
        "DJANGO_LOG_LEVEL": "WARNING",
        **extra_env,
    }
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    create = (
        "from django.contrib.auth.models import User;from rest_framework.authtoken.models import Token;"
        f"print(Token.objects.create(user=User.objects.create_user('client-{uuid.uuid4().hex[:6]}')).key)"
    )
    token = subprocess.run(
        [python, "manage.py", "shell", "-c", create],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    # The server's output goes to a file: an unread pipe fills up and blocks the server.
    log_path = tmp_path / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115
    script = subprocess.Popen(
        ["scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    port = int(env["PORT"])
    deadline = time.monotonic() + 60
    while not _answers(port) and script.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        yield LiveServer(port, token, log_path, script, dimse_port=int(env["DICOM_SCP_PORT"]))
    finally:
        # What Ctrl-C does in `make run`: the web server, the worker and the DIMSE node stop.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGINT)
        try:
            script.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait(timeout=10)
        log.close()


@pytest.fixture
def embedded_server(tmp_path):
    """:func:`embedded_service` with its defaults: ``(port, token)``."""
    with embedded_service(tmp_path) as server:
        yield server.port, server.token


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright's sync API."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (make test does)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
