"""Forwarding without processes: the rules, the transfers and their jobs, the API and the admin.

The destinations are real, in this process: a pynetdicom C-STORE SCP and an HTTP server that reads
the STOW-RS body, each in a thread on a loopback port.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from types import SimpleNamespace

import pydicom
import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import transaction
from django_tasks_db.models import DBTaskResult
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import AuditLog
from audit.services import Actor
from dicom.models import DicomFile
from dicom.services import task_queue
from dicom.services.anonymization import request_anonymization
from dicom.services.deid import DeidOptions
from dicom.services.ingest import IngestRequest, ingest_file
from dicom.tests.commands.conftest import PATIENT_PREFIX, write_instance
from dicom.tests.conftest import free_port
from dicom.tests.jobs import run_worker
from dicom.tests.services.dicom_builders import fresh_instance, part10_bytes
from dimse import forwarding, scu, services
from dimse.models import Destination, ForwardingRule, Transfer
from dimse.tests.factories import ApplicationEntityFactory

pytestmark = pytest.mark.django_db

WORKER = ("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--interval", "0")


# --- destinations in this process -----------------------------------------------------------------


@pytest.fixture
def store_scp():
    """A C-STORE SCP (AE title ARCHIVE) on a free loopback port; ``status`` is what it answers."""
    scp = SimpleNamespace(received=[], status=0x0000, calling=[], syntaxes=[])

    def on_store(event):
        scp.received.append(event.dataset)
        scp.calling.append(event.assoc.requestor.ae_title)
        scp.syntaxes.append(str(event.context.transfer_syntax))
        return scp.status

    ae = AE(ae_title="ARCHIVE")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    scp.port = server.server_address[1]
    yield scp
    server.shutdown()


@pytest.fixture
def stow_server():
    """A STOW-RS endpoint at ``http://127.0.0.1:<port>/dicomweb/studies`` that parses the body it gets."""
    state = SimpleNamespace(bodies=[], headers=[], status=200, failed=False)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.headers.append(dict(self.headers))
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
            )
            parts = [part.get_payload(decode=True) for part in message.iter_parts()]
            state.bodies.append((self.path, message.get_content_type(), message.get_param("type"), parts))
            item = {"00081155": {"vr": "UI", "Value": [pydicom.dcmread(BytesIO(parts[0])).SOPInstanceUID]}}
            answer = {"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [0xC000]}}]}}
            if not state.failed:
                answer = {"00081199": {"vr": "SQ", "Value": [item]}}
            data = json.dumps(answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/dicomweb"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def archive(request):
    """The C-STORE destination ARCHIVE: the test's ``store_scp`` if it has one, else a port nobody listens on."""
    port = request.getfixturevalue("store_scp").port if "store_scp" in request.fixturenames else free_port()
    entity = ApplicationEntityFactory(ae_title="ARCHIVE", host="127.0.0.1", port=port, may_store=False)
    return Destination.objects.create(name="archive", kind=Destination.Kind.DIMSE, application_entity=entity)


def _stored(user, tmp_path, *, anonymize: bool, index: int = 1, called_ae: str = "") -> DicomFile:
    staged = write_instance(tmp_path / f"in-{index}-{anonymize}.dcm", index)
    request = IngestRequest(
        staged_path=staged,
        sha256=None,
        anonymize=anonymize,
        study_type="ct",
        options=DeidOptions(),
        called_ae=called_ae,
    )
    return ingest_file(request=request, actor=Actor(user=user))


def _job_rows():
    return AuditLog.objects.filter(action=AuditLog.Action.JOB)


# --- rules --------------------------------------------------------------------------------------


def test_a_deidentification_rule_queues_de_identified_files_only(user, tmp_path, archive):
    rule = ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    original = _stored(user, tmp_path, anonymize=False)
    deidentified = _stored(user, tmp_path, anonymize=True, index=2)
    transfer = Transfer.objects.get()
    assert (transfer.file_id, transfer.rule, transfer.trigger, transfer.status) == (
        deidentified.id,
        rule,
        Transfer.Trigger.DEIDENTIFIED,
        Transfer.Status.QUEUED,
    )
    assert not original.transfers.exists()
    job = DBTaskResult.objects.get()
    assert (str(job.pk), job.task_path, job.args_kwargs["args"]) == (
        str(transfer.job_id),
        forwarding.FORWARD_TRANSFER,
        [transfer.pk],
    )


def test_a_received_rule_matches_its_called_ae_title_only(user, tmp_path, archive):
    ForwardingRule.objects.create(
        trigger=ForwardingRule.Trigger.RECEIVED, called_ae_title="DICOMSVC", destination=archive
    )
    _stored(user, tmp_path, anonymize=False)  # the REST upload: no called AE
    _stored(user, tmp_path, anonymize=False, index=2, called_ae="DEID")
    received = _stored(user, tmp_path, anonymize=False, index=3, called_ae="DICOMSVC")
    assert list(Transfer.objects.values_list("file_id", flat=True)) == [received.id]


@pytest.mark.parametrize("disabled", ["rule", "destination"])
def test_a_disabled_rule_or_destination_queues_nothing(user, tmp_path, archive, disabled):
    rule = ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    target = rule if disabled == "rule" else archive
    target.enabled = False
    target.save()
    _stored(user, tmp_path, anonymize=True)
    assert not Transfer.objects.exists() and not DBTaskResult.objects.exists()


def test_a_c_store_on_deid_matching_two_rules_to_one_destination_queues_one_transfer(tmp_path, archive):
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    ForwardingRule.objects.create(
        trigger=ForwardingRule.Trigger.RECEIVED, called_ae_title="DEID", destination=archive
    )
    ApplicationEntityFactory(ae_title="CT1")
    peer = services.admit(calling_ae="CT1", called_ae="DEID", address="10.1.2.3")
    ds = pydicom.dcmread(write_instance(tmp_path / "instance.dcm", 7))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    dicom_file, status, _ = services.store_instance(
        peer=peer,
        dataset=BytesIO(buffer.getvalue()),
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    assert status == 0 and dicom_file.anonymized
    assert list(Transfer.objects.values_list("file_id", "destination__name")) == [(dicom_file.id, "archive")]


def test_a_rolled_back_store_queues_nothing(user, tmp_path, archive):
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    with pytest.raises(RuntimeError), transaction.atomic():
        _stored(user, tmp_path, anonymize=True)
        assert Transfer.objects.count() == 1  # queued inside the store's transaction
        raise RuntimeError("the caller's transaction fails after the store")
    assert not Transfer.objects.exists() and not DBTaskResult.objects.exists()


def test_the_anonymize_job_completing_queues_the_derived_file(user, tmp_path, archive, store_scp):
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    original = _stored(user, tmp_path, anonymize=False)
    derived = request_anonymization(actor=Actor(user=user), source=original, options=DeidOptions())
    assert not Transfer.objects.exists()
    run_worker()  # the anonymize job, then the forwarding job it queued
    transfer = Transfer.objects.get()
    assert (transfer.file_id, transfer.status) == (derived.id, Transfer.Status.SENT)
    assert [str(ds.SOPInstanceUID) for ds in store_scp.received] == [
        DicomFile.objects.get(pk=derived.id).sop_instance_uid
    ]
    assert not str(store_scp.received[0].PatientName).startswith(PATIENT_PREFIX)


def test_a_bulk_run_queues_each_de_identified_output(user, tmp_path, archive):
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    originals = [_stored(user, tmp_path, anonymize=False, index=index) for index in range(3)]
    call_command("anonymize_bulk", "--all", stdout=io.StringIO())
    derived = set(DicomFile.objects.filter(source__in=originals).values_list("pk", flat=True))
    assert len(derived) == 3
    assert set(Transfer.objects.values_list("file_id", flat=True)) == derived
    assert DBTaskResult.objects.filter(task_path=forwarding.FORWARD_TRANSFER).count() == 3


# --- the job ------------------------------------------------------------------------------------


def test_the_job_sends_once_even_when_run_twice(user, tmp_path, archive, store_scp, settings):
    settings.DICOM_SCU_AE_TITLE = "GATEWAY"
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    dicom_file = _stored(user, tmp_path, anonymize=True)
    transfer = Transfer.objects.get()
    assert forwarding.run_transfer(transfer_id=transfer.pk) == Transfer.Status.SENT
    assert forwarding.run_transfer(transfer_id=transfer.pk) == Transfer.Status.SENT  # delivered again
    assert len(store_scp.received) == 1 and store_scp.calling == ["GATEWAY"]
    assert store_scp.received[0].SOPInstanceUID == dicom_file.sop_instance_uid
    transfer.refresh_from_db()
    assert (transfer.status, transfer.attempts, transfer.detail) == (
        Transfer.Status.SENT,
        1,
        "C-STORE status 0x0000",
    )
    assert transfer.sent_at is not None
    row = _job_rows().get()
    assert row.success and row.file_id == dicom_file.id and row.username == "alice"
    assert row.reason == (
        f"sent to destination archive (C-STORE ARCHIVE), transfer {transfer.pk}, job {transfer.job_id}: "
        "C-STORE status 0x0000"
    )
    assert row.targets == [f"instance:{dicom_file.sop_instance_uid}"]


def test_a_compressed_file_is_sent_in_its_own_transfer_syntax(user, tmp_path, archive, store_scp):
    ForwardingRule.objects.create(
        trigger=ForwardingRule.Trigger.RECEIVED, called_ae_title="DICOMSVC", destination=archive
    )
    ds = fresh_instance("SC_rgb_jpeg_dcmtk.dcm")
    staged = tmp_path / "jpeg.dcm"
    staged.write_bytes(part10_bytes(ds))
    request = IngestRequest(
        staged_path=staged,
        sha256=None,
        anonymize=False,
        study_type="ct",
        options=DeidOptions(),
        called_ae="DICOMSVC",
    )
    ingest_file(request=request, actor=Actor(user=user))
    assert forwarding.run_transfer(transfer_id=Transfer.objects.get().pk) == Transfer.Status.SENT
    assert store_scp.syntaxes == [JPEGBaseline8Bit]
    assert store_scp.received[0].PixelData == ds.PixelData


def test_uncompressed_files_also_propose_the_little_endian_syntaxes():
    assert scu.proposed_syntaxes(ExplicitVRBigEndian) == [
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    ]
    assert scu.proposed_syntaxes(ImplicitVRLittleEndian) == [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    assert scu.proposed_syntaxes(JPEGBaseline8Bit) == [JPEGBaseline8Bit]


def test_a_warning_status_is_a_send(user, tmp_path, archive, store_scp):
    store_scp.status = 0xB000
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    _stored(user, tmp_path, anonymize=True)
    assert forwarding.run_transfer(transfer_id=Transfer.objects.get().pk) == Transfer.Status.SENT
    assert Transfer.objects.get().detail == "C-STORE status 0xB000"


@pytest.mark.django_db(transaction=True)  # the real worker closes connections between looks
def test_a_failing_send_is_retried_then_given_up_with_its_status(
    user, tmp_path, archive, store_scp, settings
):
    settings.DICOM_JOB_MAX_ATTEMPTS = 2
    settings.DICOM_JOB_RETRY_DELAY_SECONDS = 0
    store_scp.status = 0xA700
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=archive)
    _stored(user, tmp_path, anonymize=True)
    transfer = Transfer.objects.get()

    call_command(*WORKER, "--max-tasks", "1", verbosity=0)
    transfer.refresh_from_db()
    job = DBTaskResult.objects.get()
    assert job.status == "READY" and len(job.worker_ids) == 1  # queued again
    assert (transfer.status, transfer.attempts) == (Transfer.Status.QUEUED, 1)
    assert transfer.detail == f"C-STORE to ARCHIVE at 127.0.0.1:{store_scp.port} failed with status 0xA700"
    assert not _job_rows().exists()

    call_command(*WORKER, "--max-tasks", "1", verbosity=0)
    transfer.refresh_from_db()
    job.refresh_from_db()
    assert job.status == "FAILED" and len(store_scp.received) == 2
    assert (transfer.status, transfer.attempts) == (Transfer.Status.FAILED, 2)
    assert transfer.detail.endswith(
        "failed with status 0xA700 (gave up after 2 attempts: ForwardFailedError)"
    )
    row = _job_rows().get()
    assert not row.success and row.status_code == 502
    # The reaper gives up a job whose workers kept dying the same way (the handler every process knows).
    assert task_queue.give_up_handler(forwarding.FORWARD_TRANSFER) is not None
    assert row.reason.startswith("not sent to destination archive (C-STORE ARCHIVE)")
    assert "0xA700" in row.reason


def test_a_failing_send_of_an_original_logs_and_audits_no_patient_value(
    user, tmp_path, archive, store_scp, caplog
):
    caplog.set_level(logging.DEBUG)
    store_scp.status = 0xC000
    ForwardingRule.objects.create(
        trigger=ForwardingRule.Trigger.RECEIVED, called_ae_title="DICOMSVC", destination=archive
    )
    original = _stored(user, tmp_path, anonymize=False, index=42, called_ae="DICOMSVC")
    transfer = Transfer.objects.get()
    with pytest.raises(forwarding.ForwardFailedError) as raised:
        forwarding.run_transfer(transfer_id=transfer.pk)
    forwarding.give_up_transfer(
        transfer_id=transfer.pk, detail="gave up after 1 attempts: ForwardFailedError"
    )
    assert str(store_scp.received[0].PatientName) == f"{PATIENT_PREFIX}00042"  # the original went out
    transfer.refresh_from_db()
    texts = [
        caplog.text,
        str(raised.value),
        transfer.detail,
        *AuditLog.objects.values_list("reason", flat=True),
    ]
    for text in texts:
        assert PATIENT_PREFIX not in text and "BULK-00042" not in text, text
    assert "0xC000" in transfer.detail and transfer.status == Transfer.Status.FAILED
    assert original.patient_id == "BULK-00042"


def test_a_rule_names_one_of_our_ae_titles():
    destination = Destination.objects.create(
        name="web", kind=Destination.Kind.DICOMWEB, url="https://a.example/dicomweb"
    )
    rule = ForwardingRule(
        trigger=ForwardingRule.Trigger.RECEIVED, called_ae_title="OTHER", destination=destination
    )
    with pytest.raises(ValidationError, match="one of this node's AE titles: DICOMSVC, DEID"):
        rule.full_clean()
    with pytest.raises(ValidationError, match="needs its base URL"):
        Destination(name="x", kind=Destination.Kind.DICOMWEB).full_clean()
    with pytest.raises(ValidationError, match="credentials go in the authorization field"):
        Destination(
            name="x", kind=Destination.Kind.DICOMWEB, url="https://u:p@a.example/dicomweb"
        ).full_clean()


def test_an_unreachable_destination_fails_the_attempt(user, tmp_path, settings):
    settings.DICOM_SCU_CONNECT_TIMEOUT_SECONDS = 2
    entity = ApplicationEntityFactory(ae_title="NOBODY", host="127.0.0.1", port=free_port())
    nowhere = Destination.objects.create(
        name="nowhere", kind=Destination.Kind.DIMSE, application_entity=entity
    )
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=nowhere)
    _stored(user, tmp_path, anonymize=True)
    with pytest.raises(forwarding.ForwardFailedError, match="no association with NOBODY"):
        forwarding.run_transfer(transfer_id=Transfer.objects.get().pk)
    assert Transfer.objects.get().status == Transfer.Status.QUEUED


def test_an_original_is_never_sent_by_a_deidentification_transfer(user, tmp_path, archive, store_scp):
    original = _stored(user, tmp_path, anonymize=False)
    with transaction.atomic():
        transfer = forwarding.queue_transfer(
            dicom_file=original, destination=archive, trigger=Transfer.Trigger.DEIDENTIFIED
        )
    assert forwarding.run_transfer(transfer_id=transfer.pk) == Transfer.Status.FAILED
    transfer.refresh_from_db()
    assert transfer.detail == "refused: a de-identification rule never sends an original"
    assert store_scp.received == []
    assert not _job_rows().get().success


def test_stow_rs_posts_the_stored_bytes_as_multipart_related(user, tmp_path, stow_server):
    web = Destination.objects.create(
        name="research", kind=Destination.Kind.DICOMWEB, url=stow_server.url, authorization="Bearer s3cret"
    )
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=web)
    dicom_file = _stored(user, tmp_path, anonymize=True)
    transfer = Transfer.objects.get()
    assert forwarding.run_transfer(transfer_id=transfer.pk) == Transfer.Status.SENT
    ((path, media_type, part_type, parts),) = stow_server.bodies
    assert (path, media_type, part_type) == ("/dicomweb/studies", "multipart/related", "application/dicom")
    from django.core.files.storage import default_storage

    assert parts == [default_storage.open(dicom_file.storage_key).read()]
    assert stow_server.headers[0]["Authorization"] == "Bearer s3cret"
    row = _job_rows().get()
    assert row.success and "s3cret" not in row.reason and "research (STOW-RS 127.0.0.1)" in row.reason


@pytest.mark.parametrize(
    ("status", "failed", "detail"), [(409, True, "answered HTTP 409"), (202, True, "0xC000")]
)
def test_a_stow_rs_refusal_fails_the_attempt(user, tmp_path, stow_server, status, failed, detail):
    stow_server.status, stow_server.failed = status, failed
    web = Destination.objects.create(name="research", kind=Destination.Kind.DICOMWEB, url=stow_server.url)
    ForwardingRule.objects.create(trigger=ForwardingRule.Trigger.DEIDENTIFIED, destination=web)
    _stored(user, tmp_path, anonymize=True)
    with pytest.raises(forwarding.ForwardFailedError, match=detail):
        forwarding.run_transfer(transfer_id=Transfer.objects.get().pk)


# --- the API ------------------------------------------------------------------------------------


def _client(user) -> APIClient:
    client = APIClient()
    # A new token each time: the token cache would keep the user (and their permissions) as they were.
    Token.objects.filter(user=user).delete()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _nothing_left():
    return not Transfer.objects.exists() and not DBTaskResult.objects.exists()


def test_a_manual_send_answers_202_with_its_transfers(user, tmp_path, archive, store_scp):
    dicom_file = _stored(user, tmp_path, anonymize=False)
    response = _client(user).post(
        "/api/dimse/send", {"destination": "archive", "files": [str(dicom_file.id)]}, format="json"
    )
    assert response.status_code == 202, response.json()
    transfer = Transfer.objects.get()
    assert response.json() == {
        "message": "queued for sending",
        "destination": "archive",
        "transfers": [
            {
                "transfer_id": transfer.pk,
                "file_id": str(dicom_file.id),
                "destination": "archive",
                "status": "queued",
                "detail": "",
                "attempts": 0,
                "job_id": str(transfer.job_id),
            }
        ],
    }
    assert (transfer.trigger, transfer.requested_by) == (Transfer.Trigger.MANUAL, user)
    export = AuditLog.objects.get(action=AuditLog.Action.EXPORT)
    assert export.success and export.file_id == dicom_file.id
    assert export.reason == "send of 1 file(s) to destination archive (C-STORE ARCHIVE) queued"
    # The same file again while queued: the same transfer, no second job.
    again = _client(user).post(
        "/api/dimse/send", {"destination": str(archive.pk), "files": [str(dicom_file.id)]}, format="json"
    )
    assert again.json()["transfers"][0]["transfer_id"] == transfer.pk
    assert DBTaskResult.objects.count() == 1
    run_worker()
    status = _client(user).get(f"/api/dimse/transfers/{transfer.pk}")
    assert status.status_code == 200 and status.json()["status"] == "sent"
    assert len(store_scp.received) == 1


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        (
            {"destination": "nope", "files": ["FILE"]},
            400,
            "unknown destination: no destination has this name or id",
        ),
        ({"destination": "archive", "files": ["not-a-uuid"]}, 404, "file not found"),
        ({"destination": "archive", "files": ["OTHER"]}, 404, "file not found"),
        ({"destination": "archive", "files": []}, 400, "files: Ensure this field has at least 1 elements."),
        ({"destination": "archive"}, 400, "files: This field is required."),
        (
            {"destination": "archive", "files": ["FILE"], "extra": 1},
            400,
            "unknown field(s) extra; known: destination, files",
        ),
        ([1, 2], 400, "Invalid data. Expected a dictionary, but got list."),
    ],
)
def test_a_refused_manual_send_leaves_nothing_behind(user, other_user, tmp_path, archive, body, code, detail):
    own = _stored(user, tmp_path, anonymize=False)
    others = _stored(other_user, tmp_path, anonymize=False, index=2)
    if isinstance(body, dict):
        body = {
            key: [str(own.id) if v == "FILE" else str(others.id) if v == "OTHER" else v for v in value]
            if key == "files"
            else value
            for key, value in body.items()
        }
    response = _client(user).post("/api/dimse/send", body, format="json")
    assert (response.status_code, response.json()) == (code, {"detail": detail})
    assert _nothing_left()
    refusal = AuditLog.objects.get(action=AuditLog.Action.EXPORT)
    assert not refusal.success and refusal.status_code == code


def test_a_disabled_destination_is_a_409(user, tmp_path, archive):
    archive.enabled = False
    archive.save()
    dicom_file = _stored(user, tmp_path, anonymize=False)
    response = _client(user).post(
        "/api/dimse/send", {"destination": "archive", "files": [str(dicom_file.id)]}, format="json"
    )
    assert (response.status_code, response.json()) == (409, {"detail": "destination archive is disabled"})
    assert _nothing_left()


def test_staff_without_the_patient_data_permission_may_send_de_identified_files_only(
    user, staff_user, tmp_path, archive
):
    original = _stored(user, tmp_path, anonymize=False)
    deidentified = _stored(user, tmp_path, anonymize=True, index=2)
    client = _client(staff_user)
    body = {"destination": "archive", "files": [str(deidentified.id), str(original.id)]}
    response = client.post("/api/dimse/send", body, format="json")
    assert response.status_code == 403
    assert "patient data permission (dicom.view_phi)" in response.json()["detail"]
    assert _nothing_left()
    staff_user.user_permissions.add(Permission.objects.get(codename="view_phi"))
    response = _client(staff_user.__class__.objects.get(pk=staff_user.pk)).post(
        "/api/dimse/send", body, format="json"
    )
    assert response.status_code == 202 and len(response.json()["transfers"]) == 2


def test_an_unauthenticated_send_is_a_401(archive):
    response = APIClient().post("/api/dimse/send", {"destination": "archive", "files": []}, format="json")
    assert response.status_code == 401 and set(response.json()) == {"detail"}


def test_another_users_transfer_is_not_found(user, other_user, tmp_path, archive):
    dicom_file = _stored(user, tmp_path, anonymize=False)
    _client(user).post(
        "/api/dimse/send", {"destination": "archive", "files": [str(dicom_file.id)]}, format="json"
    )
    response = _client(other_user).get(f"/api/dimse/transfers/{Transfer.objects.get().pk}")
    assert (response.status_code, response.json()) == (404, {"detail": "transfer not found"})


# --- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def admin_client_(django_user_model, client):
    root = django_user_model.objects.create_superuser("root", password="root-password-123")
    client.force_login(root)
    return client


def test_the_admin_action_asks_for_a_destination_then_queues(admin_client_, user, tmp_path, archive):
    dicom_file = _stored(user, tmp_path, anonymize=True)
    url = "/admin/dicom/dicomfile/"
    form = {"action": "send_to_destination", "_selected_action": [str(dicom_file.id)]}
    page = admin_client_.post(url, form)
    assert page.status_code == 200
    assert b"Send selected files to a destination" in page.content and b"archive" in page.content
    assert _nothing_left()
    done = admin_client_.post(url, {**form, "apply": "1", "destination": str(archive.pk)}, follow=True)
    assert b"Queued 1 file for sending to archive." in done.content
    transfer = Transfer.objects.get()
    assert (transfer.file_id, transfer.trigger, transfer.requested_by.username) == (
        dicom_file.id,
        Transfer.Trigger.MANUAL,
        "root",
    )
    assert AuditLog.objects.get(action=AuditLog.Action.EXPORT, username="root").success


def test_the_admin_never_shows_the_authorization_back(admin_client_):
    web = Destination.objects.create(
        name="research",
        kind=Destination.Kind.DICOMWEB,
        url="https://archive.example/dicomweb",
        authorization="Bearer s3cret",
    )
    change = f"/admin/dimse/destination/{web.pk}/change/"
    assert b"s3cret" not in admin_client_.get(change).content
    assert b"s3cret" not in admin_client_.get("/admin/dimse/destination/").content
    form = {
        "name": "research",
        "kind": "dicomweb",
        "enabled": "on",
        "url": "https://archive.example/dicomweb",
    }
    assert admin_client_.post(change, {**form, "authorization": ""}).status_code == 302
    web.refresh_from_db()
    assert web.authorization == "Bearer s3cret"  # left empty: kept
    assert admin_client_.post(change, {**form, "clear_authorization": "on"}).status_code == 302
    web.refresh_from_db()
    assert web.authorization == ""


def test_a_view_only_staff_user_sees_whether_an_authorization_is_set_not_its_value(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="viewer-password-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_destination"))
    client.force_login(viewer)
    web = Destination.objects.create(
        name="research",
        kind=Destination.Kind.DICOMWEB,
        url="https://archive.example/dicomweb",
        authorization="Bearer s3cret",
    )
    page = client.get(f"/admin/dimse/destination/{web.pk}/change/")
    assert page.status_code == 200
    assert b"s3cret" not in page.content and b"research" in page.content
