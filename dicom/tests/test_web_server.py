"""The production web server through real sockets: chunked bodies, slow clients, early 413s, a dying worker.

The server is ``scripts/run.sh`` as ``make run`` starts it (gunicorn's master, uvicorn workers on
Django's ASGI application, the db_worker), on SQLite in this test's directory, on loopback.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicom.tests.conftest import embedded_service
from dicom.tests.multipart import CONTENT_TYPE, TAIL, multipart, multipart_head

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))

pytestmark = pytest.mark.slow


MULTIPART = {"Content-Type": CONTENT_TYPE}


def _chunks(body: bytes, size: int = 7919):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_chunked_upload_is_stored_with_its_hash_and_zeroed_preamble(tmp_path):
    payload = CT_SMALL.read_bytes()
    expected = b"\0" * 128 + payload[128:]
    with embedded_service(tmp_path) as server:
        status, body = server.request(
            "POST",
            "/api/dicom/upload",
            body=_chunks(multipart(payload, study_type="ct")),
            headers=MULTIPART,
            chunked=True,
        )
        assert status == 200, body
        file_id = json.loads(body)["file_id"]
        status, stored = server.request("GET", f"/api/dicom/download/{file_id}")
        assert status == 200
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(expected).hexdigest()
        # The same through anonymize=true: de-identified on the way in.
        status, body = server.request(
            "POST",
            "/api/dicom/upload",
            body=_chunks(multipart(payload, anonymize="true")),
            headers=MULTIPART,
            chunked=True,
        )
        assert status == 200, body
        assert json.loads(body)["metadata"]["patient_name"] != "CompressedSamples^CT1"


def test_bodies_over_the_limit_are_refused_early_chunked_or_declared(tmp_path):
    limit = 1024 * 1024
    with embedded_service(tmp_path, DICOM_MAX_UPLOAD_SIZE=str(limit)) as server:
        too_big = multipart(b"\0" * (limit + 2 * 1024 * 1024))
        status, body = server.request(
            "POST", "/api/dicom/upload", body=_chunks(too_big, 65536), headers=MULTIPART, chunked=True
        )
        assert status == 413 and "exceeds the limit" in json.loads(body)["detail"]
        # Declared too large: answered before a byte of the body is sent.
        conn = server.connection()
        conn.putrequest("POST", "/api/dicom/upload")
        conn.putheader("Authorization", f"Token {server.token}")
        conn.putheader("Content-Type", MULTIPART["Content-Type"])
        conn.putheader("Content-Length", str(10 * 1024 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413 and set(json.loads(response.read())) == {"detail"}
        conn.close()
        staging = tmp_path / "data" / "files" / ".staging"
        assert not staging.exists() or list(staging.iterdir()) == []


RAW = {"Content-Type": "application/dicom"}


def test_a_raw_dicom_body_is_staged_as_it_arrives_with_the_same_hash_and_options(tmp_path):
    payload = CT_SMALL.read_bytes()
    expected = hashlib.sha256(b"\0" * 128 + payload[128:]).hexdigest()
    with embedded_service(tmp_path) as server:
        for chunked in (False, True):
            body = _chunks(payload) if chunked else payload
            status, answer = server.request(
                "POST", "/api/dicom/upload?study_type=ct", body=body, headers=RAW, chunked=chunked
            )
            assert status == 200, answer
            answer = json.loads(answer)
            assert answer["metadata"]["study_type"] == "ct" and answer["metadata"]["anonymized"] is False
            status, stored = server.request("GET", f"/api/dicom/download/{answer['file_id']}")
            assert status == 200 and hashlib.sha256(stored).hexdigest() == expected
        status, answer = server.request("POST", "/api/dicom/upload?anonymize=true", body=payload, headers=RAW)
        assert status == 200, answer
        assert json.loads(answer)["metadata"]["anonymized"] is True
        # Refused uploads leave nothing staged: a bad parameter, a body that is not DICOM.
        status, answer = server.request("POST", "/api/dicom/upload?anonymise=true", body=payload, headers=RAW)
        assert status == 400 and "unknown field(s) anonymise" in json.loads(answer)["detail"]
        status, answer = server.request("POST", "/api/dicom/upload", body=b"not dicom" * 100, headers=RAW)
        assert status == 400, answer
        staging = tmp_path / "data" / "files" / ".staging"
        assert list(staging.iterdir()) == []


def test_a_raw_body_over_the_limit_is_refused_as_it_grows(tmp_path):
    limit = 1024 * 1024
    with embedded_service(tmp_path, DICOM_MAX_UPLOAD_SIZE=str(limit)) as server:
        status, body = server.request(
            "POST",
            "/api/dicom/upload",
            body=_chunks(b"\0" * (limit + 65536), 65536),
            headers=RAW,
            chunked=True,
        )
        assert status == 413 and json.loads(body) == {"detail": f"upload exceeds the limit of {limit} bytes"}
        staging = tmp_path / "data" / "files" / ".staging"
        assert list(staging.iterdir()) == []


TRICKLERS, TRICKLE_SECONDS = 30, 30


def test_thirty_trickling_clients_do_not_slow_a_normal_one(tmp_path):
    """30 connections sending 1 byte/s (half in their headers, half in a declared body) for 30 s."""
    payload = multipart(CT_SMALL.read_bytes(), study_type="ct")
    with embedded_service(tmp_path, DICOM_HEADER_TIMEOUT_SECONDS="5", DICOM_BODY_GRACE_SECONDS="5") as server:
        closed_after: list[float] = []
        stop = threading.Event()

        def trickle(index: int) -> None:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if index % 2:
                head = (
                    f"POST /api/dicom/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Token {server.token}\r\n"
                    f"Content-Type: {MULTIPART['Content-Type']}\r\nContent-Length: 100000\r\n\r\n"
                ).encode()
                sock.sendall(head)
                rest = b"x" * 100000
            else:
                rest = (
                    b"GET /api/dicom/status/"
                    + str(uuid.uuid4()).encode()
                    + b" HTTP/1.1\r\nHost: x\r\n"
                    + b"X" * 100
                )
            started = time.monotonic()
            try:
                for byte in rest:
                    if stop.is_set():
                        return
                    sock.sendall(bytes([byte]))
                    time.sleep(1)
            except OSError:
                closed_after.append(time.monotonic() - started)  # the server dropped it
            finally:
                sock.close()

        threads = [threading.Thread(target=trickle, args=(i,), daemon=True) for i in range(TRICKLERS)]
        for thread in threads:
            thread.start()
        timings: list[tuple[str, float, int]] = []
        deadline = time.monotonic() + TRICKLE_SECONDS
        while time.monotonic() < deadline:
            for method, path, body, headers in (
                ("POST", "/api/dicom/upload", payload, MULTIPART),
                ("GET", f"/api/dicom/status/{uuid.uuid4()}", None, {}),
            ):
                started = time.monotonic()
                status, _ = server.request(method, path, body=body, headers=headers)
                timings.append((path.split("/")[3], time.monotonic() - started, status))
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    slowest = max(elapsed for _, elapsed, _ in timings)
    print(
        f"{len(timings)} normal requests during the trickle, slowest {slowest * 1000:.0f} ms; "
        f"{len(closed_after)} of {TRICKLERS} tricklers dropped, after {min(closed_after):.1f}-{max(closed_after):.1f} s"
    )
    assert {status for kind, _, status in timings if kind == "upload"} == {200}
    assert {status for kind, _, status in timings if kind == "status"} == {404}
    assert slowest < 1.0
    # Every trickler was dropped by the server: header ones after ~5 s, body ones (408) after ~5 s.
    assert len(closed_after) == TRICKLERS
    assert max(closed_after) < 15


def test_the_api_stays_up_when_the_worker_dies_and_a_new_worker_takes_the_job(tmp_path):
    with embedded_service(tmp_path) as server:
        status, body = server.request(
            "POST", "/api/dicom/upload", body=multipart(CT_SMALL.read_bytes()), headers=MULTIPART
        )
        file_id = json.loads(body)["file_id"]
        workers = subprocess.run(
            ["pgrep", "-f", "manage.py db_worker", "-s", str(server.script.pid)],
            capture_output=True,
            text=True,
        )
        (worker,) = [int(pid) for pid in workers.stdout.split()]
        os.kill(worker, signal.SIGKILL)
        status, _ = server.request("GET", f"/api/dicom/status/{file_id}")
        assert status == 200  # the API did not go down with the worker
        status, body = server.request("POST", f"/api/dicom/anonymize/{file_id}")
        assert status == 200
        derived = json.loads(body)["anonymized_file_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = server.request("GET", f"/api/dicom/status/{derived}")
            if json.loads(body)["status"] == "completed":
                break
            time.sleep(0.3)
        assert json.loads(body)["status"] == "completed"
        restarted = subprocess.run(
            ["pgrep", "-f", "manage.py db_worker", "-s", str(server.script.pid)],
            capture_output=True,
            text=True,
        )
        assert [int(pid) for pid in restarted.stdout.split()] not in ([], [worker])


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_a_large_upload_and_download_keep_the_web_workers_memory_bounded(tmp_path):
    """A 300 MB file goes up and comes back down; the web worker's peak memory grows less than 100 MB."""
    from dicom.tests.services.dicom_builders import write_native_image

    image = tmp_path / "large.dcm"
    size = write_native_image(image, rows=1024, columns=1024, frames=150)
    head, tail = multipart_head(study_type="big"), TAIL
    with embedded_service(tmp_path, WEB_WORKERS="1") as server:
        (master,) = [
            int(pid)
            for pid in subprocess.run(
                ["pgrep", "-f", "gunicorn dicomsite.asgi", "-P", str(server.script.pid)],
                capture_output=True,
                text=True,
            ).stdout.split()
        ]
        (worker,) = [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
        before = _vm_hwm_kb(worker)
        conn = server.connection(timeout=300)
        conn.putrequest("POST", "/api/dicom/upload")
        conn.putheader("Authorization", f"Token {server.token}")
        conn.putheader("Content-Type", MULTIPART["Content-Type"])
        conn.putheader("Content-Length", str(len(head) + size + len(tail)))
        conn.endheaders()
        conn.send(head)
        with open(image, "rb") as source:
            while block := source.read(1024 * 1024):
                conn.send(block)
        conn.send(tail)
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        conn.request(
            "GET",
            f"/api/dicom/download/{body['file_id']}",
            headers={"Authorization": f"Token {server.token}"},
        )
        response = conn.getresponse()
        assert response.status == 200
        received = 0
        while block := response.read(1024 * 1024):
            received += len(block)
        conn.close()
        growth_mb = (_vm_hwm_kb(worker) - before) / 1024
    print(f"{size / 1e6:.0f} MB up and down: web worker peak grew {growth_mb:.0f} MB")
    assert received == size
    assert growth_mb < 100
