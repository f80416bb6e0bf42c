"""The service as ``make run`` starts it, for DICOMweb clients no one here wrote (``dicomweb-client``).

One server per test module (starting one takes seconds): its tests must not depend on each other's
files beyond what they stored themselves (use fresh UIDs per test).
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom.tests.conftest import ROOT, LiveServer, browser, embedded_service  # noqa: F401  (browser: a fixture)


@dataclass
class DicomWebServer:
    """A live service with three accounts: ``token`` (a user), ``other_token`` (another user) and
    ``staff_token`` (staff without the patient-data permission)."""

    live: LiveServer
    data_dir: Path
    other_token: str
    staff_token: str

    @property
    def port(self) -> int:
        return self.live.port

    @property
    def token(self) -> str:
        return self.live.token

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicomweb"

    def client(self, token: str | None = None):
        """A ``dicomweb_client.DICOMwebClient`` for the service root with ``token`` (the user's by default)."""
        from dicomweb_client import DICOMwebClient

        return DICOMwebClient(url=self.url, headers={"Authorization": f"Token {token or self.token}"})

    def manage(self, code: str) -> str:
        """Run ``code`` in ``manage.py shell`` against the server's database; its output."""
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
        env["DICOM_DATA_DIR"] = str(self.data_dir)
        return subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def _new_token(server: DicomWebServer, username: str, *, staff: bool = False) -> str:
    code = (
        "from django.contrib.auth.models import User;from rest_framework.authtoken.models import Token;"
        f"print(Token.objects.create(user=User.objects.create_user({username!r}, is_staff={staff})).key)"
    )
    return server.manage(code).split()[-1]


@pytest.fixture(scope="module")
def dicomweb_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("dicomweb")
    with embedded_service(tmp_path) as live:
        server = DicomWebServer(live=live, data_dir=tmp_path / "data", other_token="", staff_token="")
        server.other_token = _new_token(server, "other-user")
        server.staff_token = _new_token(server, "staff-no-phi", staff=True)
        yield server
