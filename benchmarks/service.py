"""The service as `make run` starts it, for the benchmarks that measure it over HTTP.

``running_service`` migrates a fresh SQLite database in a temporary directory, makes a user and
its token, starts scripts/run.sh on loopback, waits until it answers, and stops it (as Ctrl-C
does) when the block ends.
"""

import http.client
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv/bin/python")


@dataclass
class Service:
    port: int
    token: str
    env: dict
    process: subprocess.Popen

    def manage(self, *args: str) -> str:
        """``manage.py`` on the service's database; its output's last line."""
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )
        return result.stdout.strip().splitlines()[-1]


@contextmanager
def running_service(*, port: int) -> Iterator[Service]:
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "DICOM_DATA_DIR": data_dir, "PORT": str(port), "DJANGO_LOG_LEVEL": "WARNING"}
        env.pop("DATABASE_URL", None)
        subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        process = subprocess.Popen(
            ["scripts/run.sh"],
            cwd=ROOT,
            env={**env, "BIN": str(ROOT / ".venv/bin")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        service = Service(port=port, token="", env=env, process=process)
        try:
            service.token = service.manage(
                "shell",
                "-c",
                "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token;"
                f"print(Token.objects.create(user=User.objects.create_user('bench-{uuid.uuid4().hex[:6]}')).key)",
            )
            for _ in range(150):
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/healthz")
                    conn.getresponse().read()
                    break
                except OSError:
                    time.sleep(0.2)
            yield service
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
