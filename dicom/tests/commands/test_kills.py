"""Kill tests: the web server and the worker die by SIGKILL mid-work; after a restart nothing is left behind.

The server is ``scripts/run.sh``, as ``make run`` starts it (``sweep_staging --all``, gunicorn with
uvicorn workers on Django's ASGI handler, ``db_worker``), on the PostgreSQL test database and this test's storage. Uploads
are streamed over a raw socket, so a kill lands in the middle of the body (or, with the whole body
sent, in the middle of de-identifying it). "Nothing left behind" means: no staged file, no
``DicomFile`` row without its stored object, no stored object without its row.
"""

import http.client
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
from django_tasks_db.models import DBTaskResult
from pydicom.data import get_testdata_file
from rest_framework.authtoken.models import Token

from audit.models import AuditLog
from audit.services import Actor
from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.anonymization import request_anonymization
from dicom.services.deid import DeidOptions
from dicom.services.ingest import IngestRequest, ingest_file
from dicom.tests.commands.conftest import wait_for
from dicom.tests.conftest import free_port
from dicom.tests.services.dicom_builders import write_native_image

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BOUNDARY = "kill-test-boundary"
WORKER = ("db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.1")
# 100 frames of 1024 x 1024 16-bit pixels: a 200 MB image (written sparse, so it costs no disk).
LARGE = {"rows": 1024, "columns": 1024, "frames": 100}


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _gone(pid: int) -> bool:
    # A killed child of a process we did not start lingers as a zombie until its parent reaps it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _largest_unnamed_file(pid: int) -> int:
    """The size of the largest unlinked file process ``pid`` holds open (its spooled request body)."""
    largest = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).endswith(" (deleted)"):
                largest = max(largest, fd.stat().st_size)
        except OSError:
            continue
    return largest


def _staged(storage_root: Path) -> list[Path]:
    staging = storage_root / ".staging"
    return sorted(staging.iterdir()) if staging.exists() else []


def _stored_objects(storage_root: Path) -> set[str]:
    """Every file under the service's key space, finished or not (a half-copied one counts too)."""
    base = storage_root / "dicom"
    if not base.exists():
        return set()
    return {str(path.relative_to(storage_root)) for path in base.rglob("*") if path.is_file()}


def _assert_nothing_left_behind(storage_root: Path) -> None:
    assert _staged(storage_root) == []
    rows = list(DicomFile.objects.all())
    assert all(row.status == DicomFile.Status.COMPLETED for row in rows)
    keys = [row.storage_key for row in rows]
    # One object per row, none without a row, and each object what its row says it is.
    assert sorted(keys) == sorted(_stored_objects(storage_root))
    for row in rows:
        assert storage.sha256_of(storage_root / row.storage_key) == row.sha256


class Server:
    """``scripts/run.sh`` in its own process group: a gunicorn master, its worker, a db_worker."""

    def __init__(self, processes, *, port: int, token: str) -> None:
        self.processes, self.port, self.token = processes, port, token
        self.script = None

    def start(self) -> None:
        env = {
            "BIN": str(Path(sys.executable).parent),
            "PORT": str(self.port),
            "DICOM_SCP_PORT": str(free_port()),
            "WEB_WORKERS": "1",
        }
        self.script = self.processes.start_program("scripts/run.sh", env=env, session=True)
        ready = wait_for(self._answers, timeout=30, interval=0.2)
        assert ready, self.processes.output(self.script)

    def _answers(self) -> bool:
        try:
            status, _ = self.request("GET", f"/api/dicom/status/{uuid.uuid4()}")
        except OSError:
            return False
        return status == 404

    def gunicorn_master(self) -> int:
        (master,) = [pid for pid in _children(self.script.pid) if "gunicorn" in _command_line(pid)]
        return master

    def web_worker(self) -> int:
        (worker,) = _children(self.gunicorn_master())
        return worker

    def kill_web_worker(self) -> None:
        """SIGKILL the gunicorn worker; its master stays and starts another one."""
        master, doomed = self.gunicorn_master(), self.web_worker()
        os.kill(doomed, signal.SIGKILL)
        assert wait_for(lambda: _gone(doomed), timeout=10)
        assert wait_for(lambda: _children(master) not in ([], [doomed]), timeout=30)
        assert wait_for(self._answers, timeout=30, interval=0.2)

    def kill_all(self) -> None:
        """SIGKILL the whole server: the script, gunicorn's master and worker, the db_worker."""
        os.killpg(self.script.pid, signal.SIGKILL)
        self.script.wait(timeout=10)

    def stop(self) -> None:
        """Stop ``make run`` as its script is stopped from outside: TERM, and it stops both servers.

        (Ctrl-C, SIGINT to the whole group, sometimes leaves a fresh worker to gunicorn's
        30 s graceful timeout, which would only make the test slow.)
        """
        os.kill(self.script.pid, signal.SIGTERM)
        self.script.wait(timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        conn = self.connect()
        headers = {"Authorization": f"Token {self.token}"}
        if body is not None:
            headers["Content-Type"] = f"multipart/form-data; boundary={BOUNDARY}"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        return response.status, json.loads(data) if data else {}


def _multipart_parts(size: int, *, anonymize: bool) -> tuple[bytes, bytes]:
    """The bytes before and after a file of ``size`` bytes in an upload body."""
    fields = {"anonymize": "true" if anonymize else "false", "study_type": "ct"}
    head = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    )
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.dcm"\r\n'
        "Content-Type: application/dicom\r\n\r\n"
    )
    return head.encode(), f"\r\n--{BOUNDARY}--\r\n".encode()


def _begin_upload(server: Server, path: Path, *, anonymize: bool, send: int) -> http.client.HTTPConnection:
    """Start uploading ``path`` with its full length declared, sending only ``send`` of its bytes."""
    size = path.stat().st_size
    head, tail = _multipart_parts(size, anonymize=anonymize)
    conn = server.connect()
    conn.putrequest("POST", "/api/dicom/upload")
    conn.putheader("Authorization", f"Token {server.token}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.endheaders()
    conn.send(head)
    with open(path, "rb") as source:
        remaining = min(send, size)
        while remaining:
            chunk = source.read(min(remaining, 1024 * 1024))
            conn.send(chunk)
            remaining -= len(chunk)
    if send >= size:
        conn.send(tail)
    return conn


@pytest.fixture
def server(processes, user) -> Server:
    token = Token.objects.create(user=user)
    running = Server(processes, port=free_port(), token=token.key)
    running.start()
    return running


@pytest.fixture
def large_dicom(tmp_path) -> Path:
    path = tmp_path / "upload" / "large.dcm"
    path.parent.mkdir()
    write_native_image(path, **LARGE)
    return path


def _upload_small(server: Server, *, anonymize: bool) -> None:
    payload = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    head, tail = _multipart_parts(len(payload), anonymize=anonymize)
    status, body = server.request("POST", "/api/dicom/upload", head + payload + tail)
    assert status == 200, body
    assert body["status"] == "completed" and body["metadata"]["anonymized"] is anonymize


@pytest.mark.parametrize("anonymize", [False, True], ids=["original", "anonymize"])
@pytest.mark.parametrize("victim", ["web-worker", "whole-server"])
def test_a_server_killed_mid_upload_leaves_nothing_after_restart(
    server, large_dicom, storage_root, anonymize, victim
):
    sent = 32 * 1024 * 1024
    worker = server.web_worker()
    upload = _begin_upload(server, large_dicom, anonymize=anonymize, send=sent)
    # The partial body, patient data and all, is on disk when the kill lands: the server reads a
    # body whole before a view sees it, into an unnamed temporary file (O_TMPFILE) that the kernel
    # frees with the process. Nothing of it is in staging yet.
    assert wait_for(lambda: _largest_unnamed_file(worker) >= sent // 2, timeout=30)
    assert _staged(storage_root) == []
    if victim == "web-worker":
        server.kill_web_worker()
    else:
        server.kill_all()
    upload.close()
    assert _staged(storage_root) == []
    assert not DicomFile.objects.exists()

    if victim == "web-worker":
        server.restart()
    else:
        server.start()
    # The restarted server works, and what it stores is all there is.
    _upload_small(server, anonymize=anonymize)
    _assert_nothing_left_behind(storage_root)
    assert DicomFile.objects.count() == 1


def test_a_web_worker_killed_while_de_identifying_an_upload_leaves_nothing_after_restart(
    server, large_dicom, storage_root
):
    upload = _begin_upload(server, large_dicom, anonymize=True, send=large_dicom.stat().st_size)
    # The received original and the de-identified output being written are both staged.
    assert wait_for(lambda: len(_staged(storage_root)) == 2, timeout=30, interval=0.005)
    server.kill_web_worker()
    upload.close()
    # Both staged files were the dead worker's: its master removed them without a restart.
    assert wait_for(lambda: _staged(storage_root) == [], timeout=10)
    assert not DicomFile.objects.exists()
    assert _stored_objects(storage_root) == set()

    server.restart()
    _upload_small(server, anonymize=True)
    _assert_nothing_left_behind(storage_root)
    assert DicomFile.objects.count() == 1


@pytest.fixture
def large_original(user, large_dicom, tmp_path):
    """A 200 MB original in storage: de-identifying it takes long enough to be killed at it."""
    staged = tmp_path / "staged.dcm"
    large_dicom.rename(staged)
    request = IngestRequest(
        staged_path=staged, sha256=None, anonymize=False, study_type="ct", options=DeidOptions()
    )
    return ingest_file(request=request, actor=Actor(user=user))


def test_a_worker_killed_while_its_output_is_staged_is_replaced_and_the_job_completes_once(
    user, large_original, processes, storage_root
):
    derived = request_anonymization(actor=Actor(user=user), source=large_original, options=DeidOptions())
    job = DBTaskResult.objects.get()

    doomed = processes.start(*WORKER, "--worker-id", "doomed")
    output_staged = wait_for(
        lambda: any(path.stat().st_size for path in _staged(storage_root)), timeout=30, interval=0.005
    )
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    assert output_staged, processes.output(doomed)
    assert _staged(storage_root), "the kill must land while the output is being written"
    assert DBTaskResult.objects.get(pk=job.pk).status == "RUNNING"
    derived.refresh_from_db()
    assert derived.status == DicomFile.Status.PROCESSING

    # Restarted as `make run` restarts: the staging sweep first, then a worker.
    sweep = processes.start("sweep_staging", "--all")
    assert sweep.wait(timeout=30) == 0, processes.output(sweep)
    processes.start(*WORKER, "--worker-id", "rescuer")
    assert wait_for(lambda: DBTaskResult.objects.get(pk=job.pk).status == "SUCCESSFUL", timeout=45)

    job.refresh_from_db()
    derived.refresh_from_db()
    assert job.worker_ids == ["doomed", "rescuer"]
    assert derived.status == DicomFile.Status.COMPLETED
    assert AuditLog.objects.filter(file_id=derived.id, action=AuditLog.Action.JOB, success=True).count() == 1
    _assert_nothing_left_behind(storage_root)
    assert sorted(DicomFile.objects.values_list("storage_key", flat=True)) == sorted(
        [large_original.storage_key, derived.storage_key]
    )
