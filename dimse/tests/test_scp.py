"""``manage.py dicom_scp`` as a process, spoken to by DCMTK's echoscu and storescu over real sockets.

The node runs on its own SQLite database and storage under ``tmp_path`` (it cannot see pytest's
test database): migrated first, read back through ``manage.py shell``.
"""

import hashlib
import socket
import time
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification

from dimse.tests.conftest import _dcmtk, dimse_node

pytestmark = pytest.mark.slow


def _dataset_bytes(data: bytes) -> bytes:
    """The bytes after the file meta group of a Part 10 file."""
    with BytesIO(data) as fp:
        pydicom.filereader.read_preamble(fp, False)
        pydicom.filereader._read_file_meta_info(fp)
        return data[fp.tell() :]


def test_echo_and_store_in_many_transfer_syntaxes(tmp_path):
    # (file, storescu flags, whether DCMTK sends the file's own transfer syntax and pixel data)
    cases = [
        ("CT_small.dcm", ["-xe"], True),
        ("CT_small.dcm", ["-xi"], False),  # converted to implicit VR by storescu
        ("MR_small.dcm", ["-xb"], False),  # big endian preferred; the node prefers explicit VR LE
        ("SC_rgb_jpeg_dcmtk.dcm", ["--propose-jpeg8"], True),
        ("JPEG-lossy.dcm", ["-xx"], True),
        ("JPEG2000.dcm", ["-xw"], True),
        ("MR_small_jp2klossless.dcm", ["-xv"], True),
        ("MR_small_RLE.dcm", ["-xr"], True),
        ("JPEGLSNearLossless_16.dcm", ["-xu"], True),
    ]
    with dimse_node(tmp_path) as node:
        echo = _dcmtk("echoscu", "-aec", "DICOMSVC", "127.0.0.1", str(node.port))
        assert echo.returncode == 0, echo.stderr
        for name, flags, _ in cases:
            path = get_testdata_file(name)
            result = _dcmtk("storescu", "-v", "-aec", "DICOMSVC", *flags, "127.0.0.1", str(node.port), path)
            assert result.returncode == 0, (name, flags, result.stderr)
            assert "Received Store Response (Success)" in result.stdout + result.stderr, (name, result.stderr)
        files = node.files()
        assert len(files) == len(cases)
        for (name, _flags, unchanged), stored in zip(cases, files, strict=True):
            source = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
            data = bytes.fromhex(stored["data"])
            assert stored["sha256"] == stored["actual"], name
            assert stored["preamble"] == "00" * 128
            assert not stored["anonymized"] and stored["owner"] == "dicom-system"
            assert stored["sop"] == source.SOPInstanceUID
            if unchanged:
                assert stored["ts"] == source.file_meta.TransferSyntaxUID, name
                # DCMTK re-encodes the elements it sends (group lengths, padding): the pixel data
                # (compressed as it was) must be what the file holds.
                assert (
                    pydicom.dcmread(BytesIO(data)).PixelData
                    == pydicom.dcmread(get_testdata_file(name)).PixelData
                )
        assert stored_ts(files) >= {
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.51",
            "1.2.840.10008.1.2.4.81",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.5",
        }
        rows = node.audit()
        assert len(rows) == len(cases)
        assert all(r["success"] and r["reason"] == "DIMSE C-STORE STORESCU -> DICOMSVC" for r in rows)
        assert node.staged() == []


def stored_ts(files: list[dict]) -> set[str]:
    return {f["ts"] for f in files}


def test_deflated_is_not_accepted(tmp_path):
    with dimse_node(tmp_path) as node:
        # Offered only deflated, the node accepts no context.
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(
            pydicom.uid.SecondaryCaptureImageStorage, pydicom.uid.DeflatedExplicitVRLittleEndian
        )
        assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMSVC")
        try:
            assert assoc.accepted_contexts == []
        finally:
            if assoc.is_established:
                assoc.release()
        # storescu, offered deflated first, falls back to an uncompressed syntax the node accepted.
        path = get_testdata_file("image_dfl.dcm")
        result = _dcmtk("storescu", "-v", "-aec", "DICOMSVC", "-xd", "127.0.0.1", str(node.port), path)
        assert "Received Store Response (Success)" in result.stdout + result.stderr, result.stderr
        (stored,) = node.files()
        assert stored["ts"] == pydicom.uid.ExplicitVRLittleEndian
        assert node.staged() == []


def test_the_deid_ae_title_stores_de_identified(tmp_path):
    source_path = get_testdata_file("CT_small.dcm")
    source = pydicom.dcmread(source_path)
    with dimse_node(tmp_path) as node:
        result = _dcmtk("storescu", "-aec", "DEID", "127.0.0.1", str(node.port), source_path)
        assert result.returncode == 0, result.stderr
        (stored,) = node.files()
        assert stored["anonymized"] and stored["sha256"] == stored["actual"]
        ds = pydicom.dcmread(BytesIO(bytes.fromhex(stored["data"])))
        assert ds.SOPInstanceUID != source.SOPInstanceUID and stored["sop"] == ds.SOPInstanceUID
        assert ds.StudyInstanceUID != source.StudyInstanceUID
        assert str(ds.get("PatientName", "")) != str(source.PatientName)
        assert str(source.PatientName).encode() not in bytes.fromhex(stored["data"])
        assert node.audit()[0]["reason"] == "DIMSE C-STORE STORESCU -> DEID"
        assert node.staged() == []


def test_only_registered_aes_associate_without_the_loopback_exception(tmp_path):
    with dimse_node(tmp_path, DICOM_SCP_TRUST_LOOPBACK="false") as node:
        node.shell(
            "from django.contrib.auth.models import User; from dimse.models import ApplicationEntity;"
            "ApplicationEntity.objects.create(ae_title='CT1', account=User.objects.create_user('ct-account'), may_store=True);"
            "ApplicationEntity.objects.create(ae_title='OLD', account=User.objects.create_user('old'), enabled=False);"
            "print('null')"
        )
        path = get_testdata_file("CT_small.dcm")
        for calling in ("STORESCU", "OLD"):
            refused = _dcmtk(
                "storescu", "-aet", calling, "-aec", "DICOMSVC", "127.0.0.1", str(node.port), path
            )
            assert refused.returncode != 0
            assert "Calling AE Title Not Recognized" in refused.stderr, refused.stderr
        called = _dcmtk("echoscu", "-aet", "CT1", "-aec", "ELSEWHERE", "127.0.0.1", str(node.port))
        assert called.returncode != 0 and "Called AE Title Not Recognized" in called.stderr
        assert node.files() == []
        stored = _dcmtk("storescu", "-aet", "CT1", "-aec", "DICOMSVC", "127.0.0.1", str(node.port), path)
        assert stored.returncode == 0, stored.stderr
        (row,) = node.files()
        assert row["owner"] == "ct-account"
        assert [r["reason"] for r in node.audit()] == ["DIMSE C-STORE CT1 -> DICOMSVC"]


def _scu(port: int):
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(pydicom.uid.CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMSVC")
    assert assoc.is_established
    return assoc


def _encoded_ct() -> tuple[pydicom.Dataset, bytes]:
    path = get_testdata_file("CT_small.dcm")
    return pydicom.dcmread(path), _dataset_bytes(Path(path).read_bytes())


def _store_rq(ds: pydicom.Dataset, data: bytes) -> C_STORE:
    rq = C_STORE()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = ds.SOPClassUID
    rq.AffectedSOPInstanceUID = ds.SOPInstanceUID
    rq.Priority = 0x0002
    rq.DataSet = BytesIO(data)
    return rq


def _send_file(port: int, path: Path) -> pydicom.Dataset:
    """C-STORE a Part 10 file's dataset bytes exactly as the file holds them (pynetdicom's chunked
    sending reads only the file meta), the answer's status dataset."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    assoc = _scu(port)
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()
        _config.STORE_SEND_CHUNKED_DATASET = previous


def test_a_truncated_dataset_is_refused_and_a_dropped_association_leaves_nothing(tmp_path):
    ds, data = _encoded_ct()
    original = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    with dimse_node(tmp_path) as node:
        # Whole: the stored file is a zeroed preamble, our file meta and the very bytes sent.
        answer = _send_file(node.port, Path(get_testdata_file("CT_small.dcm")))
        assert answer.Status == 0x0000
        (stored,) = node.files()
        whole = bytes.fromhex(stored["data"])
        assert whole[:128] == bytes(128) and _dataset_bytes(whole) == data
        assert hashlib.sha256(whole).hexdigest() == stored["sha256"]
        node.shell("from dicom.models import DicomFile; DicomFile.objects.all().delete(); print('null')")
        first_rows = len(node.audit())

        # Truncated: the file's dataset stops half-way.
        truncated = tmp_path / "truncated.dcm"
        truncated.write_bytes(original[: len(original) - len(data) // 2])
        answer = _send_file(node.port, truncated)
        assert answer.Status == 0xC000
        assert answer.ErrorComment and str(ds.PatientName) not in answer.ErrorComment
        assert node.files() == [] and node.staged() == []
        rows = node.audit()
        assert len(rows) == first_rows + 1
        assert not rows[-1]["success"] and rows[-1]["reason"].startswith(
            "DIMSE C-STORE PYSCU -> DICOMSVC: 0xC000 "
        )

        # Dropped: the command and the first fragments of the dataset, then the connection is cut.
        assoc = _scu(node.port)
        context_id = assoc.accepted_contexts[0].context_id
        message = C_STORE_RQ()
        message.primitive_to_message(_store_rq(ds, data))
        fragments = list(message.encode_msg(context_id, 4096))
        assert len(fragments) > 3
        sock = assoc.dul.socket.socket
        for primitive in fragments[:3]:
            pdu = P_DATA_TF()
            pdu.from_primitive(primitive)
            sock.sendall(pdu.encode())
        sock.shutdown(socket.SHUT_RDWR)
        assoc.kill()
        deadline = time.monotonic() + 10
        while "Association Aborted" not in node.log.read_text():
            assert time.monotonic() < deadline, "the node did not see the connection drop"
            time.sleep(0.1)
        assert node.files() == [] and node.staged() == []
        assert len(node.audit()) == first_rows + 1

        # The node still serves the next client.
        result = _dcmtk(
            "storescu", "-aec", "DICOMSVC", "127.0.0.1", str(node.port), get_testdata_file("CT_small.dcm")
        )
        assert result.returncode == 0, result.stderr
        assert len(node.files()) == 1
    assert "Traceback" not in node.log.read_text()


def test_instances_over_the_size_limit(tmp_path):
    # Abort beyond DICOM_MAX_UPLOAD_SIZE + 2 PDUs (8192): CT_small's 39 kB; 0xA700 within the margin.
    with dimse_node(tmp_path, DICOM_MAX_UPLOAD_SIZE="20000", DICOM_SCP_MAX_PDU="4096") as node:
        small = _dcmtk(
            "storescu",
            "-v",
            "-aec",
            "DICOMSVC",
            "127.0.0.1",
            str(node.port),
            get_testdata_file("MR_small.dcm"),
        )
        assert "Received Store Response (Success)" in small.stdout + small.stderr, small.stderr

        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PixelData = ds.PixelData[:16000]
        over = tmp_path / "over.dcm"
        ds.save_as(over)
        assert 20000 < over.stat().st_size < 28000
        answer = _send_file(node.port, over)
        assert answer.Status == 0xA700 and "limit" in answer.ErrorComment

        big = _dcmtk(
            "storescu", "-aec", "DICOMSVC", "127.0.0.1", str(node.port), get_testdata_file("CT_small.dcm")
        )
        assert big.returncode != 0 or "Store Response (Success)" not in big.stdout + big.stderr
        assert node.log.read_text().count("an instance exceeds 20000 bytes") == 1
        assert len(node.files()) == 1 and node.staged() == []
        echo = _dcmtk("echoscu", "-aec", "DICOMSVC", "127.0.0.1", str(node.port))
        assert echo.returncode == 0, echo.stderr


def test_an_admission_that_fails_rejects_the_association(tmp_path):
    with dimse_node(tmp_path) as node:
        node.shell(
            "from django.db import connection; cursor = connection.cursor();"
            "cursor.execute('DROP TABLE dimse_applicationentity'); print('null')"
        )
        echo = _dcmtk("echoscu", "-aec", "DICOMSVC", "127.0.0.1", str(node.port))
        assert echo.returncode != 0
        assert "Rejected Transient" in echo.stderr, echo.stderr
        assert "admission failed" in node.log.read_text()


def test_associations_beyond_the_maximum_are_rejected(tmp_path):
    with dimse_node(tmp_path, DICOM_SCP_MAX_ASSOCIATIONS="1") as node:
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(Verification)
        held = ae.associate("127.0.0.1", node.port, ae_title="DICOMSVC")
        assert held.is_established
        try:
            echo = _dcmtk("echoscu", "-aec", "DICOMSVC", "127.0.0.1", str(node.port))
            assert echo.returncode != 0 and "Local Limit Exceeded" in echo.stderr, echo.stderr
        finally:
            held.release()
        deadline = time.monotonic() + 10
        while (echo := _dcmtk("echoscu", "-aec", "DICOMSVC", "127.0.0.1", str(node.port))).returncode != 0:
            assert time.monotonic() < deadline, echo.stderr
            time.sleep(0.2)
