"""Forwarding over real sockets: PACS (DCMTK's storescu) -> the DIMSE node (de-identify) -> the archive.

The node (``manage.py dicom_scp``) and a ``manage.py db_worker`` share the node's SQLite database; a
forwarding rule is created there through ``manage.py shell``. The archive is DCMTK's ``storescp``
(C-STORE), or a second embedded service's ``/dicomweb/studies`` (STOW-RS).
"""

import json
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest

from dicom.tests.commands.conftest import PATIENT_PREFIX, write_instance
from dicom.tests.conftest import ROOT, embedded_service, free_port
from dimse.tests.conftest import PYTHON, _dcmtk, db_worker, dimse_node

pytestmark = pytest.mark.slow


def wait_for(condition, *, timeout: float, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


@contextmanager
def storescp(directory: Path):
    """DCMTK's storescp (AE title ARCHIVE, every transfer syntax) writing what it receives to ``directory``."""
    directory.mkdir(parents=True)
    port = free_port()
    log = open(directory.parent / "storescp.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        ["storescp", "-aet", "ARCHIVE", "+xa", "-od", str(directory), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        assert wait_for(listening, timeout=20, interval=0.1), "storescp did not listen"
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def add_rule(node, *, kind: str, target: dict) -> None:
    """A destination ``archive`` and a de-identification rule sending to it, in the node's database."""
    code = (
        "import json;from django.contrib.auth.models import User;"
        "from dimse.models import ApplicationEntity, Destination, ForwardingRule\n"
        f"kind, target = {kind!r}, {target!r}\n"
        "if kind == 'dimse':\n"
        "    owner = User.objects.get_or_create(username='archive-account')[0]\n"
        "    target = {'application_entity': ApplicationEntity.objects.create("
        "ae_title='ARCHIVE', account=owner, **target)}\n"
        "d = Destination.objects.create(name='archive', kind=kind, **target)\n"
        "ForwardingRule.objects.create(trigger='deidentified', destination=d)\n"
        "print(json.dumps(d.pk))"
    )
    node.shell(code)


def transfers(node) -> list[dict]:
    return node.shell(
        "import json;from dimse.models import Transfer;"
        "print(json.dumps(list(Transfer.objects.order_by('pk').values('status', 'detail', 'attempts', 'trigger'))))"
    )


def identifying(tmp_path: Path, index: int) -> tuple[Path, pydicom.Dataset]:
    path = write_instance(tmp_path / f"pacs-{index}.dcm", index)
    return path, pydicom.dcmread(path)


def test_storescu_to_deid_is_forwarded_de_identified_to_storescp(tmp_path):
    gateway = tmp_path / "gateway"
    gateway.mkdir()
    received = tmp_path / "archive" / "received"
    with storescp(received) as archive_port, dimse_node(gateway) as node, db_worker(node):
        add_rule(node, kind="dimse", target={"host": "127.0.0.1", "port": archive_port})
        deid_path, deid_source = identifying(tmp_path, 1)
        original_path, _ = identifying(tmp_path, 2)
        for called, path in (("DEID", deid_path), ("DICOMSVC", original_path)):
            result = _dcmtk("storescu", "-aec", called, "127.0.0.1", str(node.port), str(path))
            assert result.returncode == 0, result.stderr
        assert wait_for(lambda: list(received.iterdir()), timeout=60), (
            node.log.parent / "worker.log"
        ).read_text()
        assert wait_for(lambda: [t["status"] for t in transfers(node)] == ["sent"], timeout=30), transfers(
            node
        )
        time.sleep(1)  # the original would have been queued with the de-identified file: nothing more comes
        (sent,) = received.iterdir()
        dump = _dcmtk("dcmdump", str(sent))
        assert dump.returncode == 0, dump.stderr
        assert PATIENT_PREFIX not in dump.stdout and str(deid_source.PatientID) not in dump.stdout
        assert str(deid_source.SOPInstanceUID) not in dump.stdout
        forwarded = pydicom.dcmread(sent)
        stored = [f for f in node.files() if f["anonymized"]]
        assert [forwarded.SOPInstanceUID] == [f["sop"] for f in stored]
        (transfer,) = transfers(node)
        assert transfer == {
            "status": "sent",
            "detail": "C-STORE status 0x0000",
            "attempts": 1,
            "trigger": "deidentified",
        }
        jobs = [row for row in node.audit() if row["action"] == "job"]
        assert len(jobs) == 1 and jobs[0]["success"]
        assert jobs[0]["reason"].startswith("sent to destination archive (C-STORE ARCHIVE)")


def test_storescu_to_deid_is_forwarded_by_stow_rs_to_another_service(tmp_path):
    gateway, archive_dir = tmp_path / "gateway", tmp_path / "archive"
    gateway.mkdir()
    archive_dir.mkdir()
    with embedded_service(archive_dir) as archive, dimse_node(gateway) as node, db_worker(node):
        add_rule(
            node,
            kind="dicomweb",
            target={
                "url": f"http://127.0.0.1:{archive.port}/dicomweb",
                "authorization": f"Token {archive.token}",
            },
        )
        path, source = identifying(tmp_path, 3)
        result = _dcmtk("storescu", "-aec", "DEID", "127.0.0.1", str(node.port), str(path))
        assert result.returncode == 0, result.stderr
        assert wait_for(lambda: [t["status"] for t in transfers(node)] == ["sent"], timeout=60), (
            transfers(node),
            (gateway / "worker.log").read_text(),
        )
        (stored,) = [f for f in node.files() if f["anonymized"]]
        code = (
            "import json;from dicom.models import DicomFile;"
            "print(json.dumps([{'sop': f.sop_instance_uid, 'anonymized': f.anonymized, 'sha256': f.sha256, "
            "'owner': f.owner.username} for f in DicomFile.objects.all()]))"
        )
        out = subprocess.run(
            [PYTHON, "manage.py", "shell", "-v", "0", "-c", code],
            cwd=ROOT,
            env={**node.env, "DICOM_DATA_DIR": str(archive_dir / "data")},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (archived,) = json.loads(out.strip().splitlines()[-1])
        # The archive stored the de-identified bytes as sent (STOW-RS keeps what it receives).
        assert archived["sop"] == stored["sop"] != str(source.SOPInstanceUID)
        assert archived["sha256"] == stored["sha256"] and not archived["anonymized"]
        assert archived["owner"].startswith("client-")  # the archive's token's user
        (transfer,) = transfers(node)
        assert transfer["detail"] == "STOW-RS HTTP 200"
