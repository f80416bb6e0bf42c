"""C-MOVE, C-GET and Patient Root C-FIND against ``manage.py dicom_scp`` as a process, with DCMTK's
movescu, getscu and findscu; a DCMTK storescp as the move destination."""

import io
import re
import struct
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from dicom.tests.conftest import free_port
from dicom.tests.services.dicom_builders import fresh_instance, part10_bytes, search_instance
from dimse.tests.conftest import Node, _dcmtk, dimse_node

pytestmark = pytest.mark.slow

SETUP = (
    "from django.contrib.auth.models import User; from dimse.models import ApplicationEntity;"
    "ct = User.objects.create_user('ct-account');"
    "ApplicationEntity.objects.create(ae_title='CT1', account=ct, may_store=True, may_query=True, may_retrieve=True);"
    "ApplicationEntity.objects.create(ae_title='CT2', account=ct, may_store=True, may_query=True);"
    "ApplicationEntity.objects.create(ae_title='WS2', account=User.objects.create_user('other'), may_store=True,"
    " may_retrieve=True);"
    "ApplicationEntity.objects.create(ae_title='DEST', account=ct, host='127.0.0.1', port={port});"
    "ApplicationEntity.objects.create(ae_title='NOWHERE', account=ct);"
    "print('null')"
)

MOVE_DEST = (
    "from dimse.models import ApplicationEntity;"
    "ApplicationEntity.objects.filter(ae_title='DEST').update(port={port}); print('null')"
)


@contextmanager
def storescp(tmp_path: Path, *, name: str = "received", syntaxes: str = "+xa"):
    """A DCMTK storescp (AE title DEST, every transfer syntax) on a free port: (port, its directory)."""
    port, out = free_port(), tmp_path / name
    out.mkdir()
    process = subprocess.Popen(
        ["storescp", "-aet", "DEST", syntaxes, "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while _dcmtk("echoscu", "-aec", "DEST", "127.0.0.1", str(port)).returncode != 0:
        assert process.poll() is None and time.monotonic() < deadline, "storescp did not listen"
        time.sleep(0.1)
    try:
        yield port, out
    finally:
        process.terminate()
        process.wait(timeout=10)


def dataset_bytes(data: bytes) -> bytes:
    """A Part 10 file's dataset: what follows the preamble, ``DICM`` and the file meta group."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


def received(out: Path) -> dict[str, bytes]:
    """The files storescp (or getscu) wrote, by SOP Instance UID, emptied from ``out``."""
    found = {}
    for path in out.iterdir():
        if path.is_file() and not path.name.startswith("."):
            found[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path.read_bytes()
            path.unlink()
    return found


def statuses(log: str) -> list[int]:
    return [int(s, 16) for s in re.findall(r"DIMSE Status +: 0x([0-9a-fA-F]{4})", log)]


def movescu(node: Node, aet: str, destination: str, *keys: str, model: str = "-S") -> str:
    args = ["-d", model, "-aet", aet, "-aec", "DICOMSVC", "-aem", destination]
    for key in keys:
        args += [key] if key.startswith("-") or key.isdigit() else ["-k", key]  # options pass as they are
    result = _dcmtk("movescu", *args, "127.0.0.1", str(node.port))
    return result.stdout + result.stderr


def getscu(node: Node, out: Path, aet: str, *keys: str, model: str = "-S") -> str:
    out.mkdir(exist_ok=True)
    # +B: the received dataset written as it came (getscu otherwise re-encodes sequence lengths).
    args = ["-d", model, "-aet", aet, "-aec", "DICOMSVC", "+B", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = _dcmtk("getscu", *args, "127.0.0.1", str(node.port))
    return result.stdout + result.stderr


def store(node: Node, tmp_path: Path, aet: str, instances: list[dict]) -> None:
    paths = []
    for attributes in instances:
        path = tmp_path / f"in-{generate_uid()}.dcm"
        path.write_bytes(search_instance(**attributes))
        paths.append(str(path))
    stored = _dcmtk("storescu", "-aet", aet, "-aec", "DICOMSVC", "127.0.0.1", str(node.port), *paths)
    assert stored.returncode == 0, stored.stderr


def test_move_sends_the_stored_bytes_of_the_accounts_instances(tmp_path):
    study, other_study, series_a, series_b = (generate_uid() for _ in range(4))
    with (
        storescp(tmp_path) as (dest_port, out),
        dimse_node(tmp_path, DICOM_SCP_TRUST_LOOPBACK="false") as node,
    ):
        node.shell(SETUP.format(port=dest_port))
        store(node, tmp_path, "CT1", [
            {"study_uid": study, "series_uid": series_a, "PatientID": "PAT-7", "PatientName": "Doe^Jane"},
            {"study_uid": study, "series_uid": series_b, "PatientID": "PAT-7", "PatientName": "Doe^Jane"},
            {"study_uid": study, "series_uid": series_b, "PatientID": "PAT-7", "PatientName": "Doe^Jane"},
        ])  # fmt: skip
        store(node, tmp_path, "WS2", [{"study_uid": other_study, "PatientID": "PAT-7"}])
        files = {f["sop"]: f for f in node.files()}
        mine = {sop: bytes.fromhex(f["data"]) for sop, f in files.items() if f["owner"] == "ct-account"}
        assert len(mine) == 3

        # STUDY level, Study Root: every instance, the stored dataset byte for byte.
        log = movescu(node, "CT1", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
        assert statuses(log)[-1] == 0x0000, log
        got = received(out)
        assert set(got) == set(mine)
        assert all(dataset_bytes(got[sop]) == dataset_bytes(mine[sop]) for sop in mine)

        # SERIES and IMAGE levels, Patient Root (the Patient ID above them).
        log = movescu(
            node, "CT1", "DEST", "QueryRetrieveLevel=SERIES", "PatientID=PAT-7", f"StudyInstanceUID={study}",
            f"SeriesInstanceUID={series_b}", model="-P",
        )  # fmt: skip
        assert statuses(log)[-1] == 0x0000, log
        in_b = received(out)
        assert len(in_b) == 2 and set(in_b) < set(mine)
        one = sorted(in_b)[0]
        log = movescu(
            node, "CT1", "DEST", "QueryRetrieveLevel=IMAGE", "PatientID=PAT-7", f"StudyInstanceUID={study}",
            f"SeriesInstanceUID={series_b}", f"SOPInstanceUID={one}", model="-P",
        )  # fmt: skip
        assert statuses(log)[-1] == 0x0000 and set(received(out)) == {one}, log

        # PATIENT level: the account's instances of that patient, not the other account's.
        log = movescu(node, "CT1", "DEST", "QueryRetrieveLevel=PATIENT", "PatientID=PAT-7", model="-P")
        assert statuses(log)[-1] == 0x0000, log
        assert set(received(out)) == set(mine)

        # Another account's study: nothing matches, nothing sent.
        log = movescu(node, "CT1", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={other_study}")
        assert statuses(log)[-1] == 0x0000 and received(out) == {}, log

        # A destination that takes Implicit VR Little Endian only: the uncompressed files go in it.
        with storescp(tmp_path, name="implicit", syntaxes="+xi") as (implicit_port, implicit_out):
            node.shell(MOVE_DEST.format(port=implicit_port))
            log = movescu(node, "CT1", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
            assert statuses(log)[-1] == 0x0000, log
            implicit = received(implicit_out)
        node.shell(MOVE_DEST.format(port=dest_port))
        assert set(implicit) == set(mine)
        syntaxes = {
            pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID for data in implicit.values()
        }
        assert syntaxes == {ImplicitVRLittleEndian}

        # Cancelled after the first pending response: the sub-operations stop, 0xFE00.
        log = movescu(
            node, "CT1", "DEST", "--cancel", "1", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}"
        )
        assert statuses(log)[-1] == 0xFE00, log
        assert 1 <= len(received(out)) < 3

        # An unknown destination, one without host and port, one that does not listen: 0xA801.
        node.shell(
            "from django.contrib.auth.models import User; from dimse.models import ApplicationEntity;"
            f"ApplicationEntity.objects.create(ae_title='DOWN', account=User.objects.get(username='other'),"
            f" host='127.0.0.1', port={free_port()}); print('null')"
        )
        for destination in ("UNKNOWN", "NOWHERE", "DOWN"):
            log = movescu(node, "CT1", destination, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
            assert statuses(log)[-1] == 0xA801, log
        # An AE without may_retrieve: refused; a Patient Root key missing: 0xA900.
        log = movescu(node, "CT2", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
        assert statuses(log)[-1] == 0x0124, log
        log = movescu(
            node, "CT1", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}", model="-P"
        )
        assert statuses(log)[-1] == 0xA900, log
        assert received(out) == {}

        rows = [row for row in node.audit() if row["action"] == "download"]
        reasons = [row["reason"] for row in rows]
        assert (
            reasons[0]
            == "DIMSE C-MOVE CT1 -> DICOMSVC to DEST: 0x0000 3 completed, 0 failed, 0 warning, 0 remaining"
        )
        assert [row["success"] for row in rows] == [True] * 7 + [False] * 5
        assert re.fullmatch(
            r"DIMSE C-MOVE CT1 -> DICOMSVC to DEST: 0xFE00 [12] completed, 0 failed, 0 warning, [12] remaining",
            reasons[6],
        )
        assert reasons[8].startswith("DIMSE C-MOVE CT1 -> DICOMSVC to NOWHERE: 0xA801")
        assert (
            reasons[9]
            == "DIMSE C-MOVE CT1 -> DICOMSVC to DOWN: 0xA801 0 completed, 0 failed, 0 warning, 3 remaining"
        )
        assert reasons[10].startswith("DIMSE C-MOVE CT2 -> DICOMSVC to DEST: 0x0124")
        assert not any("PAT-7" in r or "Doe" in r for r in reasons)
    log = node.log.read_text()
    assert "PAT-7" not in log and "Doe^" not in log


def test_get_sends_the_stored_bytes_over_the_same_association(tmp_path):
    study, series, jpeg_study = generate_uid(), generate_uid(), generate_uid()
    with dimse_node(tmp_path, DICOM_SCP_TRUST_LOOPBACK="false") as node:
        node.shell(SETUP.format(port=free_port()))
        store(node, tmp_path, "CT1", [{"study_uid": study, "series_uid": series, "PatientID": "PAT-7"}] * 2)
        store(node, tmp_path, "WS2", [{"study_uid": study, "PatientID": "PAT-7"}])
        mine = {f["sop"]: bytes.fromhex(f["data"]) for f in node.files() if f["owner"] == "ct-account"}

        # SERIES level, Study Root: the account's two instances, not the other account's third.
        out = tmp_path / "got"
        log = getscu(
            node,
            out,
            "CT1",
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={study}",
            f"SeriesInstanceUID={series}",
        )
        assert statuses(log)[-1] == 0x0000, log
        got = received(out)
        assert set(got) == set(mine) and len(got) == 2
        assert all(dataset_bytes(got[sop]) == dataset_bytes(mine[sop]) for sop in mine)

        # STUDY level, Patient Root: the same two.
        log = getscu(
            node,
            out,
            "CT1",
            "QueryRetrieveLevel=STUDY",
            "PatientID=PAT-7",
            f"StudyInstanceUID={study}",
            model="-P",
        )
        assert statuses(log)[-1] == 0x0000 and set(received(out)) == set(mine), log

        # A compressed file whose syntax the peer did not propose: a failed sub-operation, 0xA702.
        rle = fresh_instance("SC_rgb_rle.dcm", study=jpeg_study)
        path = tmp_path / "rle.dcm"
        path.write_bytes(part10_bytes(rle))
        stored = _dcmtk(
            "storescu", "-xr", "-aet", "CT1", "-aec", "DICOMSVC", "127.0.0.1", str(node.port), str(path)
        )
        assert stored.returncode == 0, stored.stderr
        log = getscu(node, out, "CT1", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={jpeg_study}")
        assert statuses(log)[-1] == 0xA702 and received(out) == {}, log

        # An AE without may_retrieve is refused.
        log = getscu(node, out, "CT2", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
        assert statuses(log)[-1] == 0x0124 and received(out) == {}, log

        rows = [row for row in node.audit() if row["action"] == "download"]
        assert rows[2]["reason"].startswith("DIMSE C-GET CT1 -> DICOMSVC: 0xA702 0 completed, 1 failed")
        assert [row["success"] for row in rows] == [True, True, False, False]
        assert (
            rows[0]["reason"]
            == "DIMSE C-GET CT1 -> DICOMSVC: 0x0000 2 completed, 0 failed, 0 warning, 0 remaining"
        )
        assert (
            rows[-1]["reason"].startswith("DIMSE C-GET CT2 -> DICOMSVC: 0x0124") and not rows[-1]["success"]
        )
