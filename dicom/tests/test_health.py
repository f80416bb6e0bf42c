"""/healthz and /readyz against real dependencies: a real database, directories, an S3 server on
loopback (moto), a closed port, and a loopback server that accepts connections and never answers."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from django.test import Client

from audit.models import AuditLog
from dicom.services.health import CHECK_TIMEOUT_SECONDS
from dicom.tests.conftest import free_port

PROJECT = Path(__file__).resolve().parents[2]
CHECKS = {"database", "storage", "job_queue"}


@contextlib.contextmanager
def silent_server():
    """A TCP server on loopback that accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.fixture
def probe_client() -> Client:
    """A client without credentials, as a load balancer probes."""
    return Client()


@pytest.fixture
def storage_ready(storage_root) -> Path:
    storage_root.mkdir(parents=True, exist_ok=True)
    return storage_root


@pytest.fixture(autouse=True)
def _no_check_left_running():
    """A check left hanging by a test would be reported "still running" by the next one."""
    yield
    deadline = time.monotonic() + 10
    while any(t.name.startswith("readiness-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)


def _storage_settings(*, endpoint: str, bucket: str) -> dict:
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "access_key": "test",
            "secret_key": "test-secret",
            "default_acl": None,
        },
    }


def test_healthz_answers_without_credentials_and_without_the_database(probe_client):
    # No django_db mark: a query here would fail the test.
    response = probe_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")
    assert probe_client.get("/healthz/").status_code == 200


def test_probes_answer_whatever_the_host_header(probe_client, db, storage_ready):
    # A load balancer probes with the container's address, which is not among ALLOWED_HOSTS.
    assert probe_client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert probe_client.get("/readyz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert probe_client.get("/api/dicom/status/x", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_probes_answer_over_plain_http_when_https_is_enforced(probe_client, settings):
    # TLS ends at the load balancer; its probes come over plain HTTP and must not be redirected.
    settings.SECURE_SSL_REDIRECT = True
    assert probe_client.get("/healthz").status_code == 200
    assert probe_client.get("/api/dicom/status/x").status_code == 301


@pytest.mark.django_db(transaction=True)
def test_readyz_passes_with_every_check_and_writes_no_audit_row(probe_client, storage_ready):
    response = probe_client.get("/readyz?verbose=1")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    for result in body["checks"].values():
        assert result["status"] == "ok"
        assert isinstance(result["duration_ms"], float)
        assert "error" not in result
    assert AuditLog.objects.count() == 0
    # The probe file was removed again.
    assert list((storage_ready / ".staging").iterdir()) == []


def test_probes_refuse_writes(probe_client):
    assert probe_client.post("/healthz").status_code == 405
    assert probe_client.post("/readyz").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_readyz_503_names_storage_when_the_directory_is_missing(probe_client, storage_root):
    assert not storage_root.exists()
    response = probe_client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["detail"] == "not ready: storage"
    assert body["checks"]["storage"]["status"] == "failed"
    assert body["checks"]["storage"]["error"] == "StorageNotReadyError"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["job_queue"]["status"] == "ok"
    # A missing volume is not papered over by creating it.
    assert not storage_root.exists()


@pytest.mark.django_db(transaction=True)
def test_readyz_503_names_storage_when_staging_is_not_a_directory(probe_client, storage_ready):
    (storage_ready / ".staging").write_bytes(b"")
    response = probe_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == "not ready: storage"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory whatever its mode")
@pytest.mark.django_db(transaction=True)
def test_readyz_503_names_storage_when_the_directory_is_not_writable(probe_client, storage_ready):
    storage_ready.chmod(0o500)
    try:
        response = probe_client.get("/readyz")
    finally:
        storage_ready.chmod(0o700)
    assert response.status_code == 503
    assert response.json()["checks"]["storage"]["status"] == "failed"


@pytest.mark.django_db(transaction=True)
def test_readyz_checks_the_s3_bucket(probe_client, settings, s3_endpoint):
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test-secret",
    )
    client.create_bucket(Bucket="ready")
    try:
        settings.STORAGES = {
            **settings.STORAGES,
            "default": _storage_settings(endpoint=s3_endpoint, bucket="ready"),
        }
        response = probe_client.get("/readyz")
        assert response.status_code == 200, response.content
        assert response.json()["checks"]["storage"]["status"] == "ok"

        settings.STORAGES = {
            **settings.STORAGES,
            "default": _storage_settings(endpoint=s3_endpoint, bucket="gone"),
        }
        response = probe_client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["storage"] == {
            "status": "failed",
            "duration_ms": response.json()["checks"]["storage"]["duration_ms"],
            "error": "ClientError 404",
        }
    finally:
        client.delete_bucket(Bucket="ready")


@pytest.mark.django_db(transaction=True)
def test_readyz_answers_within_its_bound_when_s3_hangs(probe_client, settings):
    with silent_server() as port:
        settings.STORAGES = {
            **settings.STORAGES,
            "default": _storage_settings(endpoint=f"http://127.0.0.1:{port}", bucket="dicom"),
        }
        started = time.monotonic()
        response = probe_client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["detail"] == "not ready: storage"
    assert body["checks"]["storage"]["status"] in {"timeout", "failed"}
    assert body["checks"]["database"]["status"] == "ok"
    assert elapsed < CHECK_TIMEOUT_SECONDS + 1.0, elapsed


# --- the database itself unreachable: the default connection of a process of its own ---------

_PROBE_SCRIPT = """
import json, os, time
import django
django.setup()
from django.test import Client
probes = []
for _ in range(2):
    started = time.monotonic()
    response = Client().get("/readyz")
    probes.append({"status": response.status_code, "body": response.json(),
                   "elapsed": time.monotonic() - started})
print(json.dumps(probes))
"""


def _probe_in_process(tmp_path: Path, database_url: str) -> list[dict]:
    data = tmp_path / "data"
    (data / "files" / ".staging").mkdir(parents=True)
    env = {
        **{
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_", "DJANGO_", "DICOM_"))
        },
        "DJANGO_SETTINGS_MODULE": "dicomsite.settings",
        "DATABASE_URL": database_url,
        "DICOM_DATA_DIR": str(data),
    }
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE_SCRIPT],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_readyz_503_names_the_database_when_its_port_is_closed(tmp_path):
    port = free_port()  # bound and released: nothing listens there
    first, _ = _probe_in_process(tmp_path, f"postgres://dicom:secret-password@127.0.0.1:{port}/dicom")
    assert first["status"] == 503
    body = first["body"]
    assert body["detail"] == "not ready: database, job_queue"
    assert body["checks"]["database"]["status"] == "failed"
    assert body["checks"]["database"]["error"] == "OperationalError"
    assert body["checks"]["storage"]["status"] == "ok"
    # Nothing of the connection's settings or the driver's message reaches the answer.
    assert "secret-password" not in json.dumps(body) and str(port) not in json.dumps(body)


def test_readyz_answers_within_its_bound_when_the_database_hangs(tmp_path):
    with silent_server() as port:
        first, second = _probe_in_process(tmp_path, f"postgres://dicom:x@127.0.0.1:{port}/dicom")
    assert first["status"] == 503
    assert first["body"]["checks"]["database"]["status"] == "timeout"
    assert first["body"]["checks"]["job_queue"]["status"] == "timeout"
    assert first["body"]["checks"]["storage"]["status"] == "ok"
    assert first["elapsed"] < CHECK_TIMEOUT_SECONDS + 0.5, first["elapsed"]
    # The hanging checks are not started again: the next probe answers at once.
    assert second["status"] == 503
    assert second["body"]["checks"]["database"] == {
        "status": "timeout",
        "duration_ms": 0.0,
        "error": "still running from an earlier probe",
    }
    assert second["elapsed"] < 0.5, second["elapsed"]
