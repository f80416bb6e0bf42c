"""The DIMSE node's decisions without the network: admission, statuses, storing one dataset."""

import hashlib
from io import BytesIO

import pydicom
import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from audit.models import AuditLog
from dicom.models import DicomFile
from dicom.services import storage
from dicom.services.errors import DeidentificationRefusedError, FileTooLargeError, InvalidDicomError
from dimse import services
from dimse.models import validate_ae_title
from dimse.tests.factories import ApplicationEntityFactory

pytestmark = pytest.mark.django_db


# --- admission ----------------------------------------------------------------------------------


def test_a_registered_enabled_ae_acts_as_its_account():
    entity = ApplicationEntityFactory(ae_title="CT1", may_store=False)
    peer = services.admit(calling_ae="CT1 ", called_ae="DICOMSVC", address="10.1.2.3")
    assert isinstance(peer, services.Peer)
    assert peer.account == entity.account
    assert (peer.calling_ae, peer.called_ae, peer.may_store, peer.deidentify) == (
        "CT1",
        "DICOMSVC",
        False,
        False,
    )
    assert peer.actor().client_address == "10.1.2.3"


def test_the_deid_ae_title_de_identifies():
    ApplicationEntityFactory(ae_title="CT1")
    peer = services.admit(calling_ae="CT1", called_ae="DEID", address="10.1.2.3")
    assert peer.deidentify is True
    assert peer.audit_reason == "DIMSE C-STORE CT1 -> DEID"


def test_another_called_ae_title_is_rejected():
    ApplicationEntityFactory(ae_title="CT1")
    outcome = services.admit(calling_ae="CT1", called_ae="ANY-SCP", address="127.0.0.1")
    assert outcome == services.Rejection(
        services.CALLED_AE_NOT_RECOGNIZED, "called AE title is not this node's"
    )


@pytest.mark.parametrize("how", ["unknown", "disabled", "inactive account"])
def test_an_unregistered_disabled_or_inactive_ae_is_rejected_from_elsewhere(how):
    if how == "disabled":
        ApplicationEntityFactory(ae_title="CT1", enabled=False)
    elif how == "inactive account":
        ApplicationEntityFactory(ae_title="CT1", account__is_active=False)
    outcome = services.admit(calling_ae="CT1", called_ae="DICOMSVC", address="10.1.2.3")
    assert isinstance(outcome, services.Rejection)
    assert outcome.diagnostic == services.CALLING_AE_NOT_RECOGNIZED


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers_act_as_the_system_account_in_the_embedded_mode(settings, address):
    settings.DICOM_SYSTEM_USERNAME = "robot"
    peer = services.admit(calling_ae="WHOEVER", called_ae="DICOMSVC", address=address)
    assert isinstance(peer, services.Peer)
    assert peer.account.username == "robot"
    assert peer.account.is_active is False  # created as the jobs create it: it can never log in
    assert peer.may_store is True


def test_a_registered_ae_from_loopback_keeps_its_own_account():
    entity = ApplicationEntityFactory(ae_title="CT1", may_store=False)
    peer = services.admit(calling_ae="CT1", called_ae="DICOMSVC", address="127.0.0.1")
    assert peer.account == entity.account and peer.may_store is False


def test_loopback_is_not_trusted_when_turned_off(settings):
    settings.DICOM_SCP_TRUST_LOOPBACK = False
    outcome = services.admit(calling_ae="WHOEVER", called_ae="DICOMSVC", address="127.0.0.1")
    assert isinstance(outcome, services.Rejection)
    assert outcome.diagnostic == services.CALLING_AE_NOT_RECOGNIZED


@pytest.mark.parametrize("address", ["10.0.0.1", "192.168.1.1", "::ffff:10.0.0.1", "not an address", ""])
def test_other_addresses_are_not_loopback(address):
    assert services.is_loopback(address) is False


@pytest.mark.parametrize("title", ["", "   ", " CT", "A" * 17, "CT\\1", "CT\t1", "CTé"])
def test_invalid_ae_titles(title):
    with pytest.raises(ValidationError):
        validate_ae_title(title)


def test_valid_ae_title():
    validate_ae_title("STORE SCU-1")


# --- statuses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "comment"),
    [
        (None, 0x0000, ""),
        (
            FileTooLargeError("upload exceeds the limit of 10 bytes"),
            0xA700,
            "upload exceeds the limit of 10 bytes",
        ),
        (OSError(28, "No space left on device /secret/path"), 0xA700, "out of resources"),
        (services.SopInstanceMismatchError("SOP Instance UID differs"), 0xA900, "SOP Instance UID differs"),
        (InvalidDicomError("truncated element at offset 12"), 0xC000, "truncated element at offset 12"),
        (DeidentificationRefusedError("burned-in annotation"), 0xC000, "burned-in annotation"),
        (services.StoreNotAllowedError("this AE may not store"), 0x0124, "this AE may not store"),
        (KeyError("Doe^John"), 0x0110, "internal error (KeyError)"),
    ],
)
def test_store_status(error, status, comment):
    assert services.store_status(error) == (status, comment)


def test_error_comments_fit_their_vr():
    status, comment = services.store_status(InvalidDicomError("x" * 200))
    assert status == 0xC000 and len(comment) == 64


# --- storing one dataset ------------------------------------------------------------------------


def _encoded(ds: pydicom.Dataset, *, implicit: bool = False) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


@pytest.fixture
def ct():
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


@pytest.fixture
def peer():
    ApplicationEntityFactory(ae_title="CT1")
    return services.admit(calling_ae="CT1", called_ae="DICOMSVC", address="10.1.2.3")


def _store(peer, ds, data: bytes, **overrides):
    fields = {
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "transfer_syntax_uid": pydicom.uid.ExplicitVRLittleEndian,
        **overrides,
    }
    return services.store_instance(peer=peer, dataset=BytesIO(data), **fields)


def _staged() -> list:
    return list(storage.staging_dir().iterdir())


def test_a_dataset_is_stored_as_received_with_one_audit_row(peer, ct):
    data = _encoded(ct)
    dicom_file, status, comment = _store(peer, ct, data)
    assert (status, comment) == (0x0000, "")
    assert dicom_file.owner == peer.account and not dicom_file.anonymized
    assert dicom_file.sop_instance_uid == ct.SOPInstanceUID
    with default_storage.open(dicom_file.storage_key) as handle:
        stored = handle.read()
    assert stored[:128] == bytes(128) and stored[128:132] == b"DICM"
    assert stored.endswith(data)  # the dataset's bytes as they came, not decoded and re-encoded
    assert hashlib.sha256(stored).hexdigest() == dicom_file.sha256
    meta = pydicom.dcmread(BytesIO(stored)).file_meta
    assert meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert meta.MediaStorageSOPInstanceUID == ct.SOPInstanceUID
    row = AuditLog.objects.get()
    assert (row.action, row.success, row.file_id, row.username) == (
        "upload",
        True,
        dicom_file.id,
        peer.account.username,
    )
    assert row.reason == "DIMSE C-STORE CT1 -> DICOMSVC" and row.client_address == "10.1.2.3"
    assert _staged() == []


def test_the_deid_ae_stores_de_identified(ct):
    ApplicationEntityFactory(ae_title="CT1")
    peer = services.admit(calling_ae="CT1", called_ae="DEID", address="10.1.2.3")
    dicom_file, status, _ = _store(
        peer, ct, _encoded(ct, implicit=True), transfer_syntax_uid=pydicom.uid.ImplicitVRLittleEndian
    )
    assert status == 0x0000 and dicom_file.anonymized
    assert dicom_file.sop_instance_uid != ct.SOPInstanceUID
    assert str(ct.PatientName) not in str(dicom_file.metadata)
    assert DicomFile.objects.count() == 1 and _staged() == []


@pytest.mark.parametrize(
    ("case", "status"),
    [("other instance", 0xA900), ("other class", 0xA900), ("truncated", 0xC000), ("too large", 0xA700)],
)
def test_refused_datasets_leave_nothing_but_their_audit_row(settings, peer, ct, case, status):
    data = _encoded(ct)
    overrides = {}
    if case == "other instance":
        overrides["sop_instance_uid"] = pydicom.uid.generate_uid()
    elif case == "other class":
        overrides["sop_class_uid"] = pydicom.uid.SecondaryCaptureImageStorage
    elif case == "truncated":
        data = data[: len(data) // 2]
    else:
        settings.DICOM_MAX_UPLOAD_SIZE = len(data)
    dicom_file, got, comment = _store(peer, ct, data, **overrides)
    assert dicom_file is None and got == status
    assert comment and str(ct.PatientName) not in comment and ct.SOPInstanceUID not in comment
    assert DicomFile.objects.count() == 0 and _staged() == []
    assert not any(p.is_file() for p in storage.staging_dir().parent.rglob("*.dcm"))
    row = AuditLog.objects.get()
    assert row.success is False and row.reason.startswith(f"DIMSE C-STORE CT1 -> DICOMSVC: 0x{status:04X} ")
    assert str(ct.PatientName) not in row.reason


def test_an_ae_that_may_not_store_is_refused(ct):
    ApplicationEntityFactory(ae_title="VIEWER", may_store=False)
    peer = services.admit(calling_ae="VIEWER", called_ae="DICOMSVC", address="10.1.2.3")
    dicom_file, status, comment = _store(peer, ct, _encoded(ct))
    assert (dicom_file, status, comment) == (None, 0x0124, "this AE may not store")
    assert DicomFile.objects.count() == 0 and _staged() == []
    assert AuditLog.objects.get().success is False
