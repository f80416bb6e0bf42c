"""The production topology, started and driven as real processes on loopback.

One PostgreSQL of its own (``scripts/pg_test.sh``, so that it can be stopped and started again
for an outage), an S3-compatible server (``moto_server``, its own process), ``manage.py migrate``
once, two web servers (two gunicorn masters with one uvicorn worker each, started as
``docker-compose.yml`` starts them) and two ``manage.py db_worker`` processes, all with
``DJANGO_PRODUCTION=true`` and fresh random secrets in their environment.

The production settings redirect plain HTTP to HTTPS and send cookies marked ``Secure``: TLS ends
at a load balancer, which tells the service with ``X-Forwarded-Proto: https``
(``SECURE_PROXY_SSL_HEADER``). The test is that load balancer: every request carries the header,
and the admin's cookies are kept by hand (a client library would not send a ``Secure`` cookie
over plain HTTP). Nothing is relaxed for the test, which is what ``check --deploy`` is run on.

Uploads, anonymizations, status, metadata, downloads and the admin go through both web servers
from several client threads; one worker and one web server (its gunicorn master and worker, the
whole process group) are SIGKILLed mid-run and the clients go on through the survivors. Then the
database is stopped and started again under the running service. What must hold is written in
the assertions and printed as figures at the end.
"""

import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import signal
import string
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import boto3
import psycopg2
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicom.tests.commands.conftest import wait_for
from dicom.tests.conftest import free_port
from dicom.tests.multipart import CONTENT_TYPE, multipart

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUCKET = "dicom-topology"
SOURCES = ["CT_small.dcm", "MR_small.dcm"]
ANONYMIZE_TASK = "dicom.tasks.anonymize_file_task"
# Every job sleeps this long first, so that a worker can be killed with a job in its hands.
JOB_DELAY_MS = 300
CLIENT_THREADS = 4


def _secret(length: int) -> str:
    alphabet = string.ascii_letters + string.digits + "!#%&()*+,-./:;<=>?@[]^_{|}~"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _instance(index: int) -> bytes:
    """A distinct instance (own patient and UIDs) built from a bundled file, with a non-zero preamble."""
    dataset = dcmread(get_testdata_file(SOURCES[index % len(SOURCES)]))
    dataset.PatientName = f"Topology^Patient{index:04d}"
    dataset.PatientID = f"TOPO-{index:04d}"
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.preamble = b"MZ" + bytes(range(126))  # an executable's header: the upload zeroes it
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class Web:
    """One web server (a gunicorn master and its worker, one process group) and a way to talk to it."""

    def __init__(self, name: str, port: int, process: subprocess.Popen) -> None:
        self.name, self.port, self.process = name, port, process
        self.killed = False

    def request(
        self, method: str, path: str, *, body=None, headers=None, timeout: float = 30, https: bool = True
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        # What the TLS-terminating load balancer in front of the service adds.
        forwarded = {"X-Forwarded-Proto": "https"} if https else {}
        try:
            conn.request(method, path, body=body, headers={**forwarded, **(headers or {})})
            response = conn.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            conn.close()


class Admin:
    """A browser's session in the admin: cookies kept by hand (they are ``Secure``), CSRF as a form sends it."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def _keep(self, response: Response) -> Response:
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(header)
            for name, morsel in cookie.items():
                assert morsel["secure"], f"cookie {name} is not Secure in production"
                self.cookies[name] = morsel.value
        return response

    def _headers(self, web: Web, extra: dict | None = None) -> dict:
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return {**({"Cookie": cookie} if cookie else {}), **(extra or {})}

    def get(self, web: Web, path: str) -> Response:
        return self._keep(web.request("GET", path, headers=self._headers(web)))

    def login(self, web: Web, username: str, password: str) -> None:
        page = self.get(web, "/admin/login/")
        assert page.status == 200, page.status
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body).group(1).decode()
        origin = f"https://127.0.0.1:{web.port}"
        form = urlencode(
            {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"}
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": origin,
            "Referer": f"{origin}/admin/login/",
        }
        answer = self._keep(
            web.request("POST", "/admin/login/", body=form, headers=self._headers(web, headers))
        )
        assert answer.status == 302 and answer.headers["Location"] == "/admin/", (
            answer.status,
            answer.body[:500],
        )
        assert "sessionid" in self.cookies


@dataclass
class Tally:
    """What the clients did and saw, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    uploads: list = field(default_factory=list)  # (file_id, anonymize, expected sha256 or None)
    derived: list = field(default_factory=list)  # (source id, derived id)
    statuses: dict = field(default_factory=dict)  # "<kind> <status>" -> count
    lost: list = field(default_factory=list)  # requests whose server died under them
    errors: list = field(default_factory=list)  # anything unexpected

    def count(self, kind: str, status: int) -> None:
        with self.lock:
            key = f"{kind} {status}"
            self.statuses[key] = self.statuses.get(key, 0) + 1


class Topology:
    """Everything the test starts, each program in its own process group, stopped whatever happens."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.pg_port, self.s3_port = free_port(), free_port()
        self.pg_dir = Path(f"/tmp/dicom-topology-pg-{self.pg_port}")  # the postgres user must reach it
        self.groups: list[subprocess.Popen] = []
        self.logs: dict[str, Path] = {}
        (tmp_path / "tmp").mkdir()
        self.env = {
            # Nothing of the suite's own configuration (its database, its data directory) leaks in.
            **{
                name: value
                for name, value in os.environ.items()
                if not name.startswith(("DJANGO_", "DICOM_", "DATABASE_URL", "AWS_"))
            },
            "DJANGO_PRODUCTION": "true",
            "DJANGO_SECRET_KEY": _secret(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DICOM_DEID_KEY": _secret(48),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{self.pg_port}/dicom",
            "DICOM_STORAGE": "s3",
            "DICOM_S3_BUCKET": BUCKET,
            "DICOM_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "DICOM_S3_REGION": "us-east-1",
            "DICOM_S3_ACCESS_KEY_ID": "topology",
            "DICOM_S3_SECRET_ACCESS_KEY": _secret(40),
            "DICOM_DATA_DIR": str(tmp_path / "data"),
            # Staging (S3 mode: under the temporary directory) is this test's own.
            "TMPDIR": str(tmp_path / "tmp"),
            "DICOM_WORKER_HEARTBEAT_SECONDS": "1",
            "DICOM_WORKER_STALE_SECONDS": "3",
            "DICOM_JOB_RETRY_DELAY_SECONDS": "1",
            "DICOM_TEST_JOB_DELAY_MS": str(JOB_DELAY_MS),
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }

    # --- processes ---

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with open(log, "wb") as handle:  # the child keeps its own descriptor
            process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.groups.append(process)
        return process

    def manage(
        self, *args: str, check: bool = True, timeout: float = 120, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def output(self, name: str, tail: int = 4000) -> str:
        return self.logs[name].read_text(errors="replace")[-tail:]

    def all_output(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.output(name)}" for name in self.logs)

    def stop(self) -> None:
        for process in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.groups:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        subprocess.run(["scripts/pg_test.sh", "stop", str(self.pg_dir)], cwd=ROOT, check=False)

    def kill(self, process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    # --- the database and the bucket, read directly ---

    def pg(self, action: str) -> None:
        subprocess.run(
            ["scripts/pg_test.sh", action, str(self.pg_dir), str(self.pg_port)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )

    def query(self, sql: str, params=()) -> list[tuple]:
        conn = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname="dicom")
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            conn.close()

    def s3(self):
        return boto3.client(
            "s3",
            endpoint_url=self.env["DICOM_S3_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=self.env["DICOM_S3_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["DICOM_S3_SECRET_ACCESS_KEY"],
        )

    def bucket_keys(self) -> set[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}


def _stacks(process: subprocess.Popen) -> str:
    """What every thread of ``process`` is doing (py-spy), or how it ended, for a failure's report."""
    if process.poll() is not None:
        return f"--- process {process.pid} exited with {process.returncode} ---\n"
    dump = subprocess.run(
        [str(Path(sys.executable).with_name("py-spy")), "dump", "--pid", str(process.pid)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return f"--- py-spy dump of {process.pid} ---\n{dump.stdout}{dump.stderr}\n"


def _answers(web: Web) -> bool:
    try:
        return web.request("GET", "/healthz", timeout=2).status == 200
    except OSError:
        return False


@pytest.fixture
def topology(tmp_path):
    running = Topology(tmp_path)
    yield running
    running.stop()


def _start_everything(topology: Topology) -> tuple[list[Web], list[subprocess.Popen], dict]:
    subprocess.run(
        ["scripts/pg_test.sh", "start", str(topology.pg_dir), str(topology.pg_port)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    conn = psycopg2.connect(host="127.0.0.1", port=topology.pg_port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("CREATE DATABASE dicom")
    conn.close()
    topology.start("s3", str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(topology.s3_port))

    def bucket_made() -> bool:
        try:
            topology.s3().create_bucket(Bucket=BUCKET)
            return True
        except Exception:  # the server is still starting
            return False

    assert wait_for(bucket_made, timeout=30, interval=0.2), topology.output("s3")

    topology.manage("migrate", "--noinput", "-v", "0")
    users = {
        "client_password": _secret(24),
        "staff_password": _secret(24),
    }
    create = (
        "import os;from django.contrib.auth.models import User;"
        "from rest_framework.authtoken.models import Token;"
        "client=User.objects.create_user('topology-client', password=os.environ['CLIENT_PASSWORD']);"
        "User.objects.create_superuser('topology-staff', None, os.environ['STAFF_PASSWORD']);"
        "print(Token.objects.create(user=client).key)"
    )
    passwords = {"CLIENT_PASSWORD": users["client_password"], "STAFF_PASSWORD": users["staff_password"]}
    result = topology.manage("shell", "-c", create, env=passwords)
    users["token"] = result.stdout.split()[-1]

    webs = []
    for name in ("web-a", "web-b"):
        port = free_port()
        process = topology.start(
            name,
            str(BIN / "gunicorn"),
            "dicomsite.asgi:application",
            "--config",
            "dicomsite/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "300",
        )
        webs.append(Web(name, port, process))
    workers = [
        topology.start(name, sys.executable, "manage.py", "db_worker", "--no-reload", "--interval", "0.2")
        for name in ("worker-a", "worker-b")
    ]
    for web in webs:
        assert wait_for(lambda web=web: _answers(web), timeout=60, interval=0.2), topology.output(web.name)
    # Production as configured: plain HTTP is sent to HTTPS, HTTPS answers with HSTS.
    plain = webs[0].request("GET", "/api/dicom/upload", https=False)
    assert plain.status == 301 and plain.headers["Location"].startswith("https://"), plain.status
    secure = webs[0].request("GET", "/api/dicom/upload")
    assert secure.status == 401 and "max-age=" in secure.headers["Strict-Transport-Security"]
    return webs, workers, users


class Clients:
    """Client threads driving the API through whichever web servers are alive, alternating between them."""

    def __init__(self, webs: list[Web], token: str, tally: Tally) -> None:
        self.webs, self.token, self.tally = webs, token, tally
        self.stop = threading.Event()
        self.counter = iter(range(1_000_000))
        self.counter_lock = threading.Lock()

    def _next(self) -> int:
        with self.counter_lock:
            return next(self.counter)

    def alive(self) -> list[Web]:
        return [web for web in self.webs if not web.killed]

    def api(self, web: Web, method: str, path: str, kind: str, *, body=None, headers=None) -> Response:
        response = web.request(
            method, path, body=body, headers={"Authorization": f"Token {self.token}", **(headers or {})}
        )
        self.tally.count(kind, response.status)
        return response

    def expect(self, response: Response, what: str, status: int = 200) -> dict:
        if response.status != status:
            self.tally.errors.append(f"{what}: {response.status} {response.body[:300]!r}")
            return {}
        return response.json() if response.headers.get_content_type() == "application/json" else {}

    def run(self) -> None:
        while not self.stop.is_set():
            index = self._next()
            alive = self.alive()
            first, second = alive[index % len(alive)], alive[(index + 1) % len(alive)]
            try:
                self.round(index, first, second)
            except (OSError, http.client.HTTPException) as exc:
                if first.killed or second.killed:
                    with self.tally.lock:
                        self.tally.lost.append(f"round {index}: {type(exc).__name__}")
                else:
                    self.tally.errors.append(f"round {index} on a live server: {exc!r}")

    def round(self, index: int, first: Web, second: Web) -> None:
        """Upload through one server; status, metadata, anonymize and download through the other."""
        tally = self.tally
        anonymize = index % 3 == 0
        payload = _instance(index)
        expected = None if anonymize else _sha256(bytes(128) + payload[128:])
        fields = {"anonymize": "true" if anonymize else "false", "study_type": "ct"}
        answer = self.api(
            first,
            "POST",
            "/api/dicom/upload",
            "upload",
            body=multipart(payload, **fields),
            headers={"Content-Type": CONTENT_TYPE},
        )
        body = self.expect(answer, f"upload {index}")
        if not body:
            return
        file_id = body["file_id"]
        if anonymize and body["metadata"]["patient_name"] == f"Topology^Patient{index:04d}":
            tally.errors.append(f"upload {file_id} with anonymize=true kept the patient's name")
        with tally.lock:
            tally.uploads.append((file_id, anonymize, expected))
        status = self.expect(self.api(second, "GET", f"/api/dicom/status/{file_id}", "status"), "status")
        if status and status["status"] != "completed":
            tally.errors.append(f"upload {file_id} answered 200 but is {status['status']}")
        self.expect(self.api(second, "GET", f"/api/dicom/metadata/{file_id}", "metadata"), "metadata")
        if index % 3 == 1:  # half the originals are anonymized in the background
            queued = self.expect(
                self.api(second, "POST", f"/api/dicom/anonymize/{file_id}", "anonymize"), "anonymize"
            )
            if queued:
                with tally.lock:
                    tally.derived.append((file_id, queued["anonymized_file_id"]))
        download = self.api(first, "GET", f"/api/dicom/download/{file_id}", "download")
        self.expect(download, "download")
        if expected is not None and download.status == 200 and _sha256(download.body) != expected:
            tally.errors.append(f"download {file_id}: not the bytes uploaded (preamble zeroed)")
        with tally.lock:
            earlier = tally.derived[index % len(tally.derived)][1] if tally.derived else None
        if earlier is not None:
            self.expect(self.api(first, "GET", f"/api/dicom/status/{earlier}", "status"), "status of a job")


def _running_job_of(topology: Topology, pid: int) -> bool:
    """True while a RUNNING job was claimed last by the db_worker with process id ``pid``."""
    rows = topology.query(
        "SELECT r.worker_ids FROM django_tasks_database_dbtaskresult r WHERE r.status = 'RUNNING'"
    )
    owners = dict(topology.query("SELECT worker_id, pid FROM dicom_workerheartbeat"))
    return any(owners.get(worker_ids[-1]) == pid for (worker_ids,) in rows if worker_ids)


def _admin_tour(admin: Admin, webs: list[Web], users: dict, file_id: str) -> int:
    """Log in through one server, list, find and open a file through the other; return the pages seen."""
    admin.login(webs[0], "topology-staff", users["staff_password"])
    listing = admin.get(webs[-1], "/admin/dicom/dicomfile/")
    assert listing.status == 200, listing.status
    # Found by its id: the clients go on uploading, and the first page holds only the newest 50.
    found = admin.get(webs[-1], f"/admin/dicom/dicomfile/?q={file_id}")
    assert found.status == 200 and file_id.encode() in found.body, found.status
    page = admin.get(webs[-1], f"/admin/dicom/dicomfile/{file_id}/change/")
    assert page.status == 200, page.status
    assert b"Topology^Patient" in page.body  # a superuser sees the original's patient data
    preview = admin.get(webs[0], f"/dicom/files/{file_id}/preview/thumb.png")
    assert preview.status == 200 and preview.body.startswith(b"\x89PNG"), preview.status
    return 5


PREVIEW_KEY = re.compile(r"^previews/[0-9a-f]{2}/([0-9a-f-]{36})-[a-z]+\.png$")


def _check_files_jobs_and_bucket(topology: Topology, web: Web, token: str, tally: Tally) -> None:
    """Every acknowledged upload downloads as stored, every job ran once, and the bucket holds what the rows say."""
    auth = {"Authorization": f"Token {token}"}
    rows = {
        str(row[0]): row
        for row in topology.query("SELECT id, status, sha256, storage_key, source_id FROM dicom_dicomfile")
    }
    assert {row[1] for row in rows.values()} == {"completed"}, [
        r for r in rows.values() if r[1] != "completed"
    ]
    for file_id, _, expected in tally.uploads:
        assert file_id in rows, f"acknowledged upload {file_id} has no row"
        download = web.request("GET", f"/api/dicom/download/{file_id}", headers=auth)
        assert download.status == 200, (file_id, download.status)
        assert _sha256(download.body) == rows[file_id][2], f"upload {file_id}: not the stored sha256"
        if expected is not None:
            assert rows[file_id][2] == expected, f"upload {file_id}: stored bytes differ from the upload's"
    derived = {file_id for file_id, row in rows.items() if row[4] is not None}
    # A request answered 200 has its row; a request whose server died may have one too.
    assert {derived_id for _, derived_id in tally.derived} <= derived
    for file_id in derived:
        download = web.request("GET", f"/api/dicom/download/{file_id}", headers=auth)
        assert download.status == 200, (file_id, download.status)
        assert _sha256(download.body) == rows[file_id][2]
        assert b"Topology^Patient" not in download.body

    jobs = topology.query(
        "SELECT status, args_kwargs FROM django_tasks_database_dbtaskresult WHERE task_path = %s",
        (ANONYMIZE_TASK,),
    )
    assert {status for status, _ in jobs} <= {"SUCCESSFUL"}, jobs
    job_files = sorted(args["args"][0] for _, args in jobs)
    assert job_files == sorted(derived), "not one job per derived file"
    audited = dict(
        topology.query(
            "SELECT file_id::text, count(*) FROM audit_auditlog WHERE action = 'job' AND success GROUP BY file_id"
        )
    )
    assert audited == dict.fromkeys(derived, 1), "not one successful job audit row per derived file"
    assert topology.query("SELECT count(*) FROM audit_auditlog WHERE action = 'job' AND NOT success") == [
        (0,)
    ]

    keys = topology.bucket_keys()
    stored = {row[3] for row in rows.values()}
    assert stored <= keys, f"rows without their object: {sorted(stored - keys)}"
    for key in keys - stored:
        match = PREVIEW_KEY.match(key)
        assert match and match.group(1) in rows, f"an object without its row: {key}"


OUTAGE_SECONDS = 6


def _database_outage(topology: Topology, web: Web, token: str, tally: Tally) -> dict:
    """Stop PostgreSQL under the running service, send requests, start it again; return what was seen."""
    auth = {"Authorization": f"Token {token}"}
    original = next(file_id for file_id, anonymized, _ in tally.uploads if not anonymized)
    payload = _instance(20_000)
    form = {"Content-Type": CONTENT_TYPE, **auth}
    probes = [
        ("status", "GET", f"/api/dicom/status/{original}", None, auth),
        ("metadata", "GET", f"/api/dicom/metadata/{original}", None, auth),
        ("download", "GET", f"/api/dicom/download/{original}", None, auth),
        ("anonymize", "POST", f"/api/dicom/anonymize/{original}", None, auth),
        ("upload", "POST", "/api/dicom/upload", multipart(payload), form),
    ]
    assert web.request("GET", "/readyz").status == 200
    paused = time.monotonic()
    topology.pg("pause")
    readyz: dict[int, int] = {}
    seen: dict[str, int] = {}
    bad: list[str] = []
    requests = 0
    while time.monotonic() - paused < OUTAGE_SECONDS:
        ready = web.request("GET", "/readyz", timeout=10)
        readyz[ready.status] = readyz.get(ready.status, 0) + 1
        if ready.status != 503 or "database" not in ready.json()["detail"]:
            bad.append(f"/readyz: {ready.status} {ready.body[:200]!r}")
        assert web.request("GET", "/healthz").status == 200
        for kind, method, path, body, headers in probes:
            answer = web.request(method, path, body=body, headers=headers, timeout=15)
            requests += 1
            key = f"{kind} {answer.status}"
            seen[key] = seen.get(key, 0) + 1
            is_json = answer.headers.get_content_type() == "application/json"
            if answer.status != 503 or not is_json or not answer.json().get("detail"):
                bad.append(f"{method} {path}: {answer.status} {answer.body[:200]!r}")
        time.sleep(0.2)
    topology.pg("resume")
    resumed = time.monotonic()

    def recovered() -> bool:
        return (
            web.request("GET", "/readyz").status == 200
            and web.request("GET", f"/api/dicom/status/{original}", headers=auth).status == 200
        )

    assert wait_for(recovered, timeout=30, interval=0.2), topology.output(web.name)
    assert bad == [], "during the database outage:\n" + "\n".join(sorted(set(bad)))
    return {
        "seconds": resumed - paused,
        "readyz": readyz,
        "requests": requests,
        "statuses": seen,
        "recovery": time.monotonic() - resumed,
    }


def test_the_production_topology_survives_kills_and_a_database_outage(topology):
    try:
        _drive(topology)
    except BaseException:
        print(topology.all_output())  # what every process said, for the failure's report
        raise


def _drive(topology: Topology) -> None:
    started = time.monotonic()
    webs, workers, users = _start_everything(topology)
    web_a, web_b = webs
    worker_a, worker_b = workers
    tally = Tally()
    clients = Clients(webs, users["token"], tally)
    kills: list[str] = []
    pool = ThreadPoolExecutor(CLIENT_THREADS)
    try:
        futures = [pool.submit(clients.run) for _ in range(CLIENT_THREADS)]
        # A worker killed with a job in its hands: the job must still complete, once.
        assert wait_for(lambda: len(tally.uploads) >= 6, timeout=60), (tally.errors, topology.all_output())
        assert wait_for(lambda: _running_job_of(topology, worker_a.pid), timeout=30, interval=0.02)
        topology.kill(worker_a)
        kills.append("db_worker (SIGKILL, mid-job)")
        # The admin through both servers while the clients go on.
        original = next(file_id for file_id, anonymized, _ in tally.uploads if not anonymized)
        admin_pages = _admin_tour(Admin(), webs, users, original)
        # A web server killed under the clients' requests: its gunicorn master and worker.
        time.sleep(1)
        web_b.killed = True
        topology.kill(web_b.process)
        kills.append("web server (SIGKILL to gunicorn's process group)")
        assert not _answers(web_b)
        time.sleep(4)
    finally:
        clients.stop.set()
        pool.shutdown(wait=True)
    for future in futures:
        future.result()
    assert tally.errors == [], tally.errors
    assert worker_b.poll() is None and web_a.process.poll() is None

    def drained() -> bool:
        return topology.query("SELECT count(*) FROM dicom_dicomfile WHERE status = 'processing'")[0][0] == 0

    assert wait_for(drained, timeout=60, interval=0.3), "jobs left processing"
    assert web_a.process.poll() is None, "the surviving web server stopped"
    # What a restart of the killed server does first (as make run does): an upload killed between
    # storing its object and committing its row left an object without a row; this removes it.
    swept = topology.manage("sweep_staging", "--all").stdout
    orphans_swept = int(re.search(r"removed (\d+) stored object", swept).group(1))
    _check_files_jobs_and_bucket(topology, web_a, users["token"], tally)

    # --- the database goes away under the running service, and comes back ---
    outage = _database_outage(topology, web_a, users["token"], tally)

    # The same processes work again: a new upload and its anonymization, done by the surviving worker.
    assert worker_b.poll() is None, "the db_worker died during the database outage:\n" + topology.output(
        "worker-b"
    )
    after = Clients([web_a], users["token"], tally)
    after.round(10_000, web_a, web_a)
    assert tally.errors == [], tally.errors
    assert wait_for(drained, timeout=30, interval=0.3), _stacks(worker_b) + topology.output(
        "worker-b", tail=20_000
    )
    _check_files_jobs_and_bucket(topology, web_a, users["token"], tally)

    verify = topology.manage("verify_audit", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    deploy = topology.manage("check", "--deploy", "--fail-level", "WARNING", check=False)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr

    jobs = topology.query(
        "SELECT count(*), count(*) FILTER (WHERE jsonb_array_length(worker_ids) > 1) "
        "FROM django_tasks_database_dbtaskresult WHERE task_path = %s",
        (ANONYMIZE_TASK,),
    )[0]
    audit_rows = topology.query("SELECT count(*) FROM audit_auditlog")[0][0]
    print(
        f"\ntopology: 2 web servers, 2 db_workers, PostgreSQL, moto S3; {time.monotonic() - started:.0f} s in all"
        f"\nuploads acknowledged: {len(tally.uploads)} "
        f"({sum(1 for _, anonymized, _ in tally.uploads if anonymized)} with anonymize=true)"
        f"\nanonymization jobs: {jobs[0]} completed, each once ({jobs[1]} taken back from the killed worker)"
        f"\nrequests: {dict(sorted(tally.statuses.items()))}; {len(tally.lost)} lost with the killed server"
        f"\nadmin pages: {admin_pages}; kills: {len(kills)} ({'; '.join(kills)}); "
        f"objects without a row swept after the kills: {orphans_swept}"
        f"\noutage: {outage['seconds']:.1f} s; /readyz {outage['readyz']}; "
        f"{outage['requests']} API requests during it: {outage['statuses']}; "
        f"recovered in {outage['recovery']:.1f} s without a restart"
        f"\naudit: {verify.stdout.strip().splitlines()[0]} ({audit_rows} rows); check --deploy: "
        f"{deploy.stdout.strip() or deploy.stderr.strip()}"
    )
