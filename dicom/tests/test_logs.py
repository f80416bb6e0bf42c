"""Log lines: one JSON line per request and per job in production, none holding a query string or
patient data; plain lines in development."""

import copy
import io
import json
import logging.config
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.test import AsyncClient
from django_tasks_db.models import DBTaskResult
from pydicom import dcmread
from pydicom.data import get_testdata_file
from rest_framework.authtoken.models import Token

from dicom.models import DicomFile
from dicom.services import storage, task_queue
from dicom.tests.jobs import run_worker

PROJECT = Path(__file__).resolve().parents[2]
CT_SMALL = get_testdata_file("CT_small.dcm")
REQUEST_KEYS = {
    "timestamp",
    "level",
    "logger",
    "message",
    "request_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "user_id",
}
JOB_KEYS = {
    "timestamp",
    "level",
    "logger",
    "message",
    "request_id",
    "task",
    "job_id",
    "status",
    "duration_ms",
}


@pytest.fixture
def json_logs():
    """The production logging configuration (JSON lines), written to a buffer for the test."""
    buffer = io.StringIO()
    config = copy.deepcopy(django_settings.LOGGING)
    config["handlers"]["console"]["formatter"] = "json"
    config["handlers"]["console"]["stream"] = buffer

    def lines(logger: str | None = None) -> list[dict]:
        parsed = [json.loads(line) for line in buffer.getvalue().splitlines()]
        return [entry for entry in parsed if logger is None or entry["logger"] == logger]

    logging.config.dictConfig(config)
    lines.text = buffer.getvalue
    try:
        yield lines
    finally:
        logging.config.dictConfig(django_settings.LOGGING)


def _upload(client) -> str:
    with open(CT_SMALL, "rb") as handle:
        response = client.post("/api/dicom/upload?patient=Doe", {"file": handle}, format="multipart")
    assert response.status_code == 200, response.content
    return response.json()["file_id"]


@pytest.mark.django_db
def test_a_token_request_writes_one_json_line_with_its_user_and_no_query_string(api, user, json_logs):
    file_id = _upload(api)
    response = api.get(f"/api/dicom/status/{file_id}?patient_name=Doe%5EJohn")
    assert response.status_code == 200
    lines = json_logs("dicomsite.requests")
    assert len(lines) == 2
    status_line = lines[1]
    assert set(status_line) == REQUEST_KEYS
    assert status_line["method"] == "GET"
    assert status_line["path"] == f"/api/dicom/status/{file_id}"
    assert status_line["status"] == 200
    assert status_line["user_id"] == user.pk
    assert status_line["request_id"] == response["X-Request-ID"]
    assert isinstance(status_line["duration_ms"], float)
    assert status_line["level"] == "INFO"
    assert lines[0]["path"] == "/api/dicom/upload" and lines[0]["method"] == "POST"
    # No query string, no patient value of the uploaded file, in any line of the log.
    text = json_logs.text()
    patient_name = str(dcmread(CT_SMALL).PatientName)
    assert "Doe" not in text and "patient" not in text
    assert patient_name not in text


@pytest.mark.django_db
def test_a_refused_request_writes_one_line_without_a_user(client, json_logs):
    response = client.get(f"/api/dicom/status/{uuid.uuid4()}?q=Doe")
    assert response.status_code == 401
    (line,) = json_logs("dicomsite.requests")
    assert set(line) == REQUEST_KEYS
    assert line["status"] == 401 and line["user_id"] is None
    assert "?" not in line["path"] and "Doe" not in json_logs.text()


@pytest.mark.django_db
def test_an_admin_session_request_names_its_user(client, staff_user, json_logs):
    client.force_login(staff_user)
    response = client.get("/admin/?q=Doe")
    assert response.status_code == 200
    (line,) = json_logs("dicomsite.requests")
    assert line["user_id"] == staff_user.pk
    assert line["path"] == "/admin/"


@pytest.mark.django_db
def test_a_refused_upload_line_holds_no_parser_message(api, json_logs):
    response = api.post("/api/dicom/upload", {"file": io.BytesIO(b"not dicom at all")}, format="multipart")
    assert response.status_code == 400
    (line,) = json_logs("dicomsite.requests")
    assert set(line) == REQUEST_KEYS
    assert (
        line["message"] == f"POST /api/dicom/upload 400 {line['duration_ms']:.1f} ms user {line['user_id']}"
    )


def _run_jobs() -> None:
    run_worker(worker_class=task_queue.QueueWorker, worker_id="log-test-worker")


@pytest.mark.django_db
def test_a_job_run_writes_its_json_line(api, json_logs):
    source_id = _upload(api)
    response = api.post(f"/api/dicom/anonymize/{source_id}")
    assert response.status_code == 200
    derived_id = response.json()["anonymized_file_id"]
    _run_jobs()
    assert DicomFile.objects.get(pk=derived_id).status == DicomFile.Status.COMPLETED
    (line,) = json_logs("dicom.jobs")
    assert set(line) >= JOB_KEYS
    assert line["task"] == task_queue.ANONYMIZE_FILE
    assert line["job_id"] == str(DBTaskResult.objects.get().pk)
    assert line["status"] == "successful"
    assert line["attempt"] == 1 and line["worker_id"] == "log-test-worker"
    assert line["duration_ms"] > 0
    assert "error" not in line
    assert str(dcmread(CT_SMALL).PatientName) not in json_logs.text()


@pytest.mark.django_db
def test_a_failed_job_line_names_the_error_class_only(api, json_logs):
    source_id = _upload(api)
    api.post(f"/api/dicom/anonymize/{source_id}")
    storage.delete(DicomFile.objects.get(pk=source_id).storage_key)
    _run_jobs()
    (line,) = json_logs("dicom.jobs")
    assert line["status"] == "failed"
    assert line["error"] and "." not in line["error"] and " " not in line["error"]


# --- the settings themselves: production picks JSON, development plain lines ------------------

_LOG_SCRIPT = """
import django
django.setup()
import logging
from django.test import Client
logging.getLogger("dicom.example").warning("a warning %s", 7)
import warnings
warnings.warn("a library's warning")
Client().get("/no-such-page?patient=Doe", HTTP_HOST="dicom.example.org", secure=True)
"""


def _run_with(tmp_path: Path, **environment: str) -> list[str]:
    env = {
        **{
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_", "DJANGO_", "DICOM_"))
        },
        "DJANGO_SETTINGS_MODULE": "dicomsite.settings",
        "DICOM_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **environment,
    }
    completed = subprocess.run(
        [sys.executable, "-c", _LOG_SCRIPT], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stderr.splitlines()


def test_production_writes_every_record_as_json(tmp_path):
    lines = _run_with(
        tmp_path,
        DJANGO_PRODUCTION="true",
        DJANGO_SECRET_KEY="s" * 50,
        DJANGO_ALLOWED_HOSTS="dicom.example.org",
        DICOM_DEID_KEY="k" * 40,
    )
    entries = [json.loads(line) for line in lines]
    by_logger = {entry["logger"]: entry for entry in entries}
    # Every line is JSON (json.loads above), Python warnings included.
    assert set(by_logger) >= {"dicom.example", "dicomsite.requests", "django.request", "py.warnings"}
    for entry in entries:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= set(entry)
    assert by_logger["dicom.example"]["message"] == "a warning 7"
    assert by_logger["dicom.example"]["request_id"] is None
    request = by_logger["dicomsite.requests"]
    assert set(request) == REQUEST_KEYS
    assert (request["path"], request["status"], request["user_id"]) == ("/no-such-page", 404, None)
    assert "Doe" not in "\n".join(lines)


def test_development_writes_plain_lines(tmp_path):
    lines = _run_with(tmp_path, DJANGO_ALLOWED_HOSTS="dicom.example.org")
    assert any(" INFO dicomsite.requests [" in line and "GET /no-such-page 404 " in line for line in lines), (
        lines
    )
    assert not any(line.startswith("{") for line in lines)


@pytest.mark.django_db(transaction=True)
def test_a_token_request_through_the_asgi_handler_writes_its_line(user, json_logs):
    # The web server runs Django's ASGI handler: the same one line, the same user and request id.
    token = Token.objects.create(user=user)
    response = async_to_sync(AsyncClient().get)(
        f"/api/dicom/status/{uuid.uuid4()}?q=Doe", headers={"Authorization": f"Token {token.key}"}
    )
    assert response.status_code == 404
    (line,) = json_logs("dicomsite.requests")
    assert set(line) == REQUEST_KEYS
    assert (line["user_id"], line["request_id"]) == (user.pk, response["X-Request-ID"])
    assert "Doe" not in json_logs.text()
