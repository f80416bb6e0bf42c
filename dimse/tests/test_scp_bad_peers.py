"""Peers that misbehave on the wire: oversized PDUs, silent connections, hostile UIDs.

The fast tests drive :class:`dimse.scp.FramedSocket` over a socket pair; the slow ones a real
``manage.py dicom_scp`` process over TCP, each ending with the node still serving (``echoscu``).
"""

import socket
import struct
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dimse import scp, services
from dimse.tests.conftest import _dcmtk, dimse_node
from dimse.tests.test_scp import _dataset_bytes, _scu, _send_file


def _header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield scp.FramedSocket(ours, max_pdu=4096, address="127.0.0.1"), theirs
    ours.close()
    theirs.close()


def _read(framed: scp.FramedSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += framed.recv(min(4096, size - len(data)))
    return data


def test_pdus_within_their_bounds_pass_through_however_they_are_read(pair):
    framed, peer = pair
    stream = (
        _header(0x01, 3000) + bytes(3000) + _header(0x04, 4096) + bytes(4096) + _header(0x05, 4) + b"\0" * 4
    )
    peer.sendall(stream)
    got = b""
    for size in (1, 5, 2999, 1, 4, 2, 4096, 4, 6):  # split across headers and bodies
        got += _read(framed, size)
    assert got == stream
    assert framed.fileno() == framed._socket.fileno()  # the rest is the socket's


@pytest.mark.parametrize(("pdu_type", "length"), [(0x04, 4097), (0x01, 1024**2 + 1), (0x07, 2**32 - 1)])
def test_a_pdu_longer_than_accepted_ends_the_read_at_its_header(pair, pdu_type, length):
    framed, peer = pair
    peer.sendall(_header(0x04, 10) + bytes(10) + _header(pdu_type, length) + bytes(100))
    assert _read(framed, 16) == _header(0x04, 10) + bytes(10)
    with pytest.raises(scp.PduTooLongError):
        _read(framed, 6)


def _echo(port: int) -> None:
    echo = _dcmtk("echoscu", "-aec", "DICOMSVC", "127.0.0.1", str(port))
    assert echo.returncode == 0, echo.stderr


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the node closes ``sock`` (reads end or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


@pytest.mark.slow
def test_oversized_pdus_close_the_connection_before_their_bytes_arrive(tmp_path):
    with dimse_node(tmp_path, DICOM_SCP_MAX_PDU="16384") as node:
        # An A-ASSOCIATE-RQ that declares 100 MB: closed on its header alone.
        with socket.create_connection(("127.0.0.1", node.port)) as sock:
            sock.sendall(_header(0x01, 100 * 1024**2) + bytes(1000))
            assert _closed_within(sock, 10)
        # Inside an association: a P-DATA-TF longer than the maximum the node offered.
        assoc = _scu(node.port)
        try:
            raw = assoc.dul.socket.socket
            raw.sendall(_header(0x04, 16384 + 1) + bytes(100))
            deadline = time.monotonic() + 10
            while assoc.is_established:
                assert time.monotonic() < deadline, "the node kept the association"
                time.sleep(0.1)
        finally:
            assoc.kill()
        _echo(node.port)
        log = node.log.read_text()
        assert "declares 104857600 bytes, more than 1048576" in log
        assert "declares 16385 bytes, more than 16384" in log
        assert node.files() == [] and node.staged() == []


@pytest.mark.slow
def test_silent_and_stalled_connections_give_their_slot_back(tmp_path):
    env = {"DICOM_SCP_MAX_ASSOCIATIONS": "1", "DICOM_SCP_ACSE_TIMEOUT": "1", "DICOM_SCP_NETWORK_TIMEOUT": "2"}
    with dimse_node(tmp_path, **env) as node:
        # Connected, nothing sent: the ACSE timeout ends it.
        with socket.create_connection(("127.0.0.1", node.port)) as silent:
            assert _closed_within(silent, 10)
        # Half a PDU header, then silence: the read timeout ends it.
        with socket.create_connection(("127.0.0.1", node.port)) as stalled:
            stalled.sendall(b"\x01\x00\x00")
            assert _closed_within(stalled, 10)
        _echo(node.port)


@pytest.mark.slow
def test_a_path_as_sop_instance_uid_is_refused_and_nothing_is_written(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hostile = "../../../../tmp/evil"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = hostile
    path = tmp_path / "hostile.dcm"
    ds.save_as(path)
    data = path.read_bytes()
    assert hostile.encode() in _dataset_bytes(data)
    with dimse_node(tmp_path) as node:
        answer = _send_file(node.port, path)
        assert answer.Status in (0xA900, 0xC000)
        assert hostile not in str(answer.get("ErrorComment", ""))
        assert node.files() == [] and node.staged() == []
        written = [p for p in tmp_path.rglob("*") if p.is_file() and "evil" in p.name]
        assert written == [] and not Path("/tmp/evil").exists()
        (row,) = node.audit()
        assert not row["success"] and hostile not in row["reason"]
        _echo(node.port)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", True),
        ("1.2.3.0004", True),  # leading zeros are non-conformant but harmless: taken, as the REST upload does
        ("1" * 64, True),
        ("1" * 65, False),
        ("../../tmp/evil", False),
        ("1.2/3", False),
        ("1..2", False),
        ("", False),
        ("1.2.", False),
    ],
)
def test_what_counts_as_a_uid(value, valid):
    assert services.is_uid(value) is valid
