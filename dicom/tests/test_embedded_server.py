"""The embedded default as `make run` starts it: gunicorn + db_worker on SQLite, hit by many clients."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parents[2]
BOUNDARY = "embedded-test-boundary"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _multipart(payload: bytes, **fields: str) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.dcm"\r\n'
        "Content-Type: application/dicom\r\n\r\n"
    )
    return "".join(parts).encode() + payload + f"\r\n--{BOUNDARY}--\r\n".encode()


def _request(port: int, method: str, path: str, token: str, body: bytes | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Token {token}"}
    if body is not None:
        headers["Content-Type"] = f"multipart/form-data; boundary={BOUNDARY}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else {}


@pytest.fixture
def embedded_server(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}},
        "DICOM_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(_free_port()),
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
    while time.monotonic() < deadline:
        try:
            _request(port, "GET", "/api/dicom/status/none", token)
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield port, token
    finally:
        # What Ctrl-C does in `make run`: both the web server and the worker stop.
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)
        log.close()


def test_six_clients_uploading_while_the_worker_writes_all_succeed(embedded_server):
    port, token = embedded_server
    payload = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    statuses: list[int] = []
    derived: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for round_ in range(5):
            status, body = _request(
                port, "POST", "/api/dicom/upload", token, _multipart(payload, study_type="ct")
            )
            with lock:
                statuses.append(status)
            if status == 200 and round_ % 2 == 0:
                status, queued = _request(port, "POST", f"/api/dicom/anonymize/{body['file_id']}", token)
                with lock:
                    statuses.append(status)
                    derived.append(queued.get("anonymized_file_id", ""))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses and set(statuses) == {200}, statuses
    assert len(derived) == 18
    deadline = time.monotonic() + 120
    pending = set(derived)
    while pending and time.monotonic() < deadline:
        for file_id in list(pending):
            status, body = _request(port, "GET", f"/api/dicom/status/{file_id}", token)
            assert status == 200
            assert body["status"] != "failed", body
            if body["status"] == "completed":
                pending.discard(file_id)
        time.sleep(0.3)
    assert not pending, f"{len(pending)} anonymization jobs did not complete"


def test_the_access_log_keeps_no_query_string_or_referer(embedded_server, tmp_path):
    """An admin search by patient ID (``?q=``) never reaches the server's log, nor does a Referer."""
    port, token = embedded_server
    typed = "PATIENT-ID-4711"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "GET",
        f"/admin/dicom/dicomfile/?q={typed}",
        headers={"Referer": f"http://127.0.0.1:{port}/admin/audit/auditlog/?q={typed}"},
    )
    assert conn.getresponse().read() is not None
    conn.request(
        "GET", f"/api/dicom/status/{uuid.uuid4()}?q={typed}", headers={"Authorization": f"Token {token}"}
    )
    assert conn.getresponse().status == 404
    conn.close()
    log = tmp_path / "server.log"
    deadline = time.monotonic() + 10
    while "/api/dicom/status/" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert '"GET /admin/dicom/dicomfile/ HTTP/1.1" 302' in text
    assert "/api/dicom/status/" in text
    assert typed not in text
