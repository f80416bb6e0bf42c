"""The DIMSE node as a process (``manage.py dicom_scp``) for the slow tests, and DCMTK's tools.

The node runs on its own SQLite database and storage under ``tmp_path`` (it cannot see pytest's
test database): migrated first, read back through ``manage.py shell``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from dicom.tests.conftest import ROOT, free_port

PYTHON = sys.executable


class Node:
    def __init__(self, port: int, env: dict, log: Path, process: subprocess.Popen) -> None:
        self.port, self.env, self.log, self.process = port, env, log, process

    def shell(self, code: str):
        """Run ``code`` in ``manage.py shell`` against the node's database; what it printed last, as JSON."""
        out = subprocess.run(
            [PYTHON, "manage.py", "shell", "-v", "0", "-c", code],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])

    def files(self) -> list[dict]:
        return self.shell(
            "import json, hashlib; from dicom.models import DicomFile;"
            "from django.core.files.storage import default_storage as s\n"
            "def one(f):\n"
            "    data = s.open(f.storage_key).read()\n"
            "    return {'id': str(f.id), 'sha256': f.sha256, 'actual': hashlib.sha256(data).hexdigest(),"
            " 'preamble': data[:128].hex(), 'ts': f.transfer_syntax_uid, 'sop': f.sop_instance_uid,"
            " 'anonymized': f.anonymized, 'owner': f.owner.username, 'data': data.hex()}\n"
            "print(json.dumps([one(f) for f in DicomFile.objects.order_by('created_at')]))"
        )

    def audit(self) -> list[dict]:
        return self.shell(
            "import json; from audit.models import AuditLog;"
            "print(json.dumps(list(AuditLog.objects.order_by('id').values('action', 'success', 'reason', 'username'))))"
        )

    def staged(self) -> list[str]:
        return self.shell(
            "import json, os; from dicom.services.storage import staging_dir;"
            "print(json.dumps(os.listdir(staging_dir())))"
        )


@contextmanager
def dimse_node(tmp_path: Path, **extra_env: str):
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}},
        "DICOM_DATA_DIR": str(tmp_path / "data"),
        "DJANGO_LOG_LEVEL": "INFO",
        **extra_env,
    }
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    log_path = tmp_path / "scp.log"
    log = open(log_path, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [PYTHON, "manage.py", "dicom_scp", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    # Ready when it says so: a probing connection would hold one of its association slots until
    # pynetdicom's ACSE timeout.
    while "DIMSE node listening" not in log_path.read_text():
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "the DIMSE node did not listen"
        time.sleep(0.2)
    try:
        yield Node(port, env, log_path, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            log.close()
        assert code == 0, log_path.read_text()
        assert "DIMSE node stopped" in log_path.read_text()


def _dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess:
    """A DCMTK tool, with ``TCP_NODELAY=1`` as a tuned site runs them (DCMTK reads it)."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, env=env)


@contextmanager
def db_worker(node):
    """``manage.py db_worker`` on the node's database (its environment)."""
    log = open(node.log.parent / "worker.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [PYTHON, "manage.py", "db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.1"],
        cwd=ROOT,
        env=node.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(autouse=True)
def _fresh_forwarding_rules():
    """Rules are read once per process every couple of seconds; a test's rules, rolled back with its
    transaction (no delete signal), must not reach the next test's files."""
    from dimse import forwarding  # here: orthanc_dimse.py imports this module without Django set up

    forwarding.forget_rules()
    yield
    forwarding.forget_rules()
