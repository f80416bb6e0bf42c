"""Fixtures shared by the dicom app's tests: the service started as `make run` starts it, and Chromium."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
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


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/api/dicom/status/none")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


@pytest.fixture
def embedded_server(tmp_path):
    """``scripts/run.sh`` (gunicorn + db_worker) on SQLite under ``tmp_path``: ``(port, token)``.

    The token is a new ordinary user's. The server's output is in ``tmp_path / "server.log"``.
    """
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}},
        "DICOM_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(free_port()),
        "BIN": str(Path(sys.executable).parent),
        "DJANGO_LOG_LEVEL": "WARNING",
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
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        ["scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    port = int(env["PORT"])
    deadline = time.monotonic() + 60
    while not _answers(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        yield port, token
    finally:
        # What Ctrl-C does in `make run`: both the web server and the worker stop.
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)
        log.close()


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
