"""The embedded default as `make run` starts it: gunicorn + db_worker on SQLite, hit by many clients."""

import http.client
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicom.tests.multipart import CONTENT_TYPE, multipart

pytestmark = pytest.mark.slow


def _request(port: int, method: str, path: str, token: str, body: bytes | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Token {token}"}
    if body is not None:
        headers["Content-Type"] = CONTENT_TYPE
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else {}


def test_six_clients_uploading_while_the_worker_writes_all_succeed(embedded_server):
    port, token = embedded_server
    payload = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    statuses: list[int] = []
    derived: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for round_ in range(5):
            status, body = _request(
                port, "POST", "/api/dicom/upload", token, multipart(payload, study_type="ct")
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
    assert "GET /admin/dicom/dicomfile/ 302" in text
    assert "/api/dicom/status/" in text
    assert typed not in text
