"""``make run`` (``scripts/run.sh``) starts the DIMSE node next to the web server and the worker."""

import socket
import time

import pytest
from pydicom.data import get_testdata_file

from dicom.tests.conftest import embedded_service
from dimse.tests.conftest import _dcmtk

pytestmark = pytest.mark.slow


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_make_run_starts_the_node_and_stops_it_with_the_rest(tmp_path):
    with embedded_service(tmp_path) as service:
        port = service.dimse_port
        deadline = time.monotonic() + 60
        while "DIMSE node listening" not in service.log.read_text():
            assert service.script.poll() is None and time.monotonic() < deadline, service.log.read_text()
            time.sleep(0.2)
        echo = _dcmtk("echoscu", "-aec", "DICOMSVC", "127.0.0.1", str(port))
        assert echo.returncode == 0, echo.stderr
        stored = _dcmtk("storescu", "-aec", "DEID", "127.0.0.1", str(port), get_testdata_file("CT_small.dcm"))
        assert stored.returncode == 0, stored.stderr
    # Ctrl-C stopped the node with the web server and the worker.
    assert not _listening(port)
    assert "DIMSE node stopped" in service.log.read_text()


def test_a_taken_dimse_port_stops_make_run_with_the_reason(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with embedded_service(tmp_path, DICOM_SCP_PORT=str(port)) as service:
            service.script.wait(timeout=60)
            log = service.log.read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in log
    assert "starting it again" not in log
