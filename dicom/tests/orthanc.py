"""Debian's Orthanc (``/usr/sbin/Orthanc``) as a peer, for the slow tests and the benchmarks.

- :func:`namespace_command`: a command run in a network namespace of its own with only loopback up
  (``unshare -n``; root, or through sudo). Orthanc listens on every interface: nothing it opens
  should be reachable from outside, nor what runs beside it.
- :func:`running_orthanc`: Orthanc with a configuration generated from keyword options over a base
  (temporary storage and SQLite index, HTTP on a free loopback port, no DICOM server, no plugins,
  no authentication), until the block ends; :class:`Rest` speaks to its REST API.

Imports nothing from Django: the scripts run inside the namespace use it before any settings exist.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def namespace_unavailable() -> str | None:
    """Why :func:`namespace_command` cannot work here, or ``None``."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (util-linux, iproute2)"
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        return "a network namespace of its own needs root or sudo"
    return None


def namespace_command(argv: list[str]) -> list[str]:
    """``argv`` run in a new network namespace with only loopback up (through sudo unless root)."""
    command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
    if os.geteuid() != 0:
        command = ["sudo", "--preserve-env", *command]
    return command


def report_of(script: Path, *, needs: tuple[str, ...] = (ORTHANC,)) -> dict:
    """Run ``script`` (a driver printing one JSON object last) in a loopback-only namespace, as the
    Orthanc peer tests do, without the suite's database settings; the object. ``pytest.fail`` when
    a file in ``needs`` or the namespace is missing: ``make test`` installs them."""
    import pytest  # only the tests call this; the drivers import this module without pytest's fixtures

    for needed in needs:
        if not os.path.exists(needed):
            pytest.fail(
                f"{needed} is missing: install Debian's orthanc and orthanc-dicomweb (make test does)"
            )
    if reason := namespace_unavailable():
        pytest.fail(reason)
    command = namespace_command([sys.executable, str(script)])
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


class Rest:
    """Requests to an HTTP server on loopback, each on a connection of its own."""

    def __init__(self, port: int, headers: dict | None = None) -> None:
        self.port, self.headers = port, headers or {}

    def call(self, method: str, path: str, body=None, headers=None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        if isinstance(body, dict | list):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data

    def answers(self, path: str) -> bool:
        try:
            self.call("GET", path)
            return True
        except OSError:
            return False

    def json(self, method: str, path: str, body=None):
        """The answer as JSON; ``RuntimeError`` for a status of 300 or more."""
        status, data = self.call(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data) if data else None


@dataclass
class Orthanc:
    http_port: int
    dicom_port: int | None  # None: its DICOM server is off
    process: subprocess.Popen
    log: Path

    @property
    def rest(self) -> Rest:
        return Rest(self.http_port)

    def log_tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:]


@contextmanager
def running_orthanc(work: Path, *, env: dict | None = None, **config) -> Iterator[Orthanc]:
    """Orthanc with its storage, index, configuration (``orthanc.json``) and log under ``work``.

    ``config`` adds to or overrides the base configuration (Orthanc's option names); with
    ``DicomServerEnabled`` and no ``DicomPort`` a free port is taken. ``env`` adds environment
    variables (``TCP_NODELAY=1``: DCMTK, under Orthanc's DICOM server, then disables Nagle's
    algorithm on its sockets). ``RuntimeError`` with the log's tail if it does not answer.
    """
    work.mkdir(parents=True, exist_ok=True)
    settings = {
        "Name": work.name,
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "HttpPort": free_port(),
        "DicomServerEnabled": False,
        "Plugins": [],
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        **config,
    }
    if settings["DicomServerEnabled"] and "DicomPort" not in settings:
        settings["DicomPort"] = free_port()
    (work / "orthanc.json").write_text(json.dumps(settings, indent=1))
    log_path = work / "orthanc.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [ORTHANC, str(work / "orthanc.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    orthanc = Orthanc(
        http_port=settings["HttpPort"],
        dicom_port=settings.get("DicomPort") if settings["DicomServerEnabled"] else None,
        process=process,
        log=log_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not orthanc.rest.answers("/system"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {orthanc.log_tail(2000)}")
            time.sleep(0.2)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
