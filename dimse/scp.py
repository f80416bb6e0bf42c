"""The DIMSE node on the network (pynetdicom): C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET SCP under our AE titles.

Each association runs in its own thread (pynetdicom's), with its own database connection, kept
from one message to the next (on SQLite a close is a WAL checkpoint, and a new connection costs
more than the query) unless an error left it unusable, and closed when the association is
released or aborted: at most ``DICOM_SCP_MAX_ASSOCIATIONS`` connections are held. The decisions live in
``dimse.services``; this module only maps them onto pynetdicom's events:

- ``EVT_REQUESTED``: :func:`dimse.services.admit`; a refusal answers A-ASSOCIATE-RJ (permanent,
  service user, calling or called AE title not recognized).
- ``EVT_C_ECHO``: success.
- ``EVT_C_STORE``: :func:`dimse.services.store_instance` on the dataset's encoded bytes, which
  pynetdicom hands over undecoded (``event.request.DataSet``).
- ``EVT_C_FIND`` (Study Root and Patient Root): :func:`dimse.find.answer_find`, its identifiers sent as pending
  responses while the peer has not cancelled, then :func:`dimse.find.record_find` and the final status.
- ``EVT_C_MOVE`` and ``EVT_C_GET`` (Study Root and Patient Root): :func:`dimse.retrieve.plan_retrieve`,
  then one C-STORE sub-operation per instance (to the destination over the association pynetdicom
  opens to it, or back over the same association), each read from storage only when its turn comes,
  the peer's cancellation checked before each; the sub-operations' outcomes counted from the C-STORE
  responses (``EVT_DIMSE_RECV``) for :func:`dimse.retrieve.record_retrieve`.
- ``EVT_DATA_RECV``: pynetdicom gathers a message in memory before the handler sees it, so an
  instance larger than ``DICOM_MAX_UPLOAD_SIZE`` cannot be answered 0xA700 without being held
  whole. Once the P-DATA received since the last C-STORE exceed the limit by more than two PDUs
  the association is aborted instead; within that margin the instance is answered 0xA700 when
  it is complete (the staging writer's bound).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from django.conf import settings
from django.db import connections
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.presentation import AllStoragePresentationContexts, build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dimse import find, retrieve, services

logger = logging.getLogger(__name__)

# What the service can store: the uncompressed syntaxes and the compressed ones it decodes (JPEG,
# JPEG-LS, JPEG 2000, RLE). Not Deflated Explicit VR Little Endian: pydicom inflates it unbounded.
STORE_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
assert DeflatedExplicitVRLittleEndian not in STORE_TRANSFER_SYNTAXES

_PEER = "_dimse_peer"
_RECEIVED = "_dimse_received"
_ABORTING = "_dimse_aborting"
P_DATA_TF = b"\x04"


def no_delay(event) -> None:
    """EVT_CONN_OPEN of an association we request (C-MOVE sub-operations, forwarding): the socket
    with ``TCP_NODELAY``. pynetdicom never sets it, and a request's second PDU then waits for the
    peer's delayed ACK: about 40 ms per message, a C-STORE SCU at some 20 instances/s."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


REQUESTOR_HANDLERS = [(evt.EVT_CONN_OPEN, no_delay)]


def build_ae(*, ae_title: str) -> AE:
    """The application entity: Verification, every storage SOP class (also as SCU, for C-GET),
    Study Root and Patient Root C-FIND, C-MOVE and C-GET, our bounds."""
    # pynetdicom logs C-FIND identifiers at INFO: their values are patient data (names, IDs).
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    ae = AE(ae_title=ae_title)
    # Our own check of the called AE title (two are ours) runs in EVT_REQUESTED.
    ae.require_called_aet = False
    ae.maximum_associations = settings.DICOM_SCP_MAX_ASSOCIATIONS
    ae.maximum_pdu_size = settings.DICOM_SCP_MAX_PDU
    # A connection that sends no A-ASSOCIATE-RQ gives its slot back after the ACSE timeout; an
    # association whose peer goes silent ends after the network timeout.
    ae.acse_timeout = settings.DICOM_SCP_ACSE_TIMEOUT
    ae.network_timeout = settings.DICOM_SCP_NETWORK_TIMEOUT
    ae.add_supported_context(Verification)
    for model in (
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelGet,
    ):
        ae.add_supported_context(model)
    for context in AllStoragePresentationContexts:
        # A C-GET SCU proposes to be the storage SCP too (role selection, PS3.7 D.3.3.4): accepted.
        ae.add_supported_context(
            context.abstract_syntax, STORE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )
    return ae


def _drop_broken_connections() -> None:
    """After a handler: this thread's database connections stay open for the association's next
    message, but one an error left unusable (the database restarted) is closed."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()


def on_association_end(event) -> None:
    """EVT_RELEASED, EVT_ABORTED: the association's database connections closed (in its thread, the
    reactor's, where both are triggered; a thread that ends otherwise drops them with its locals)."""
    connections.close_all()


def handlers() -> list[tuple]:
    return [
        (evt.EVT_RELEASED, on_association_end),
        (evt.EVT_ABORTED, on_association_end),
        (evt.EVT_REQUESTED, on_requested),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_C_FIND, on_find),
        (evt.EVT_C_MOVE, on_move),
        (evt.EVT_C_GET, on_get),
        (evt.EVT_DATA_RECV, on_data_received),
    ]


def on_data_received(event) -> None:
    """Count the P-DATA bytes of the message under way; abort beyond the bound (see the module)."""
    data = event.data
    if data[:1] != P_DATA_TF:
        return
    assoc = event.assoc
    if getattr(assoc, _ABORTING, False):
        return
    received = getattr(assoc, _RECEIVED, 0) + len(data)
    setattr(assoc, _RECEIVED, received)
    if received > settings.DICOM_MAX_UPLOAD_SIZE + 2 * settings.DICOM_SCP_MAX_PDU:
        peer = getattr(assoc, _PEER, None)
        logger.warning(
            "association from %s aborted: an instance exceeds %s bytes",
            peer.calling_ae if peer else "?",
            settings.DICOM_MAX_UPLOAD_SIZE,
        )
        setattr(assoc, _ABORTING, True)
        assoc.abort(block=False)


def on_requested(event) -> None:
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    address = assoc.requestor.address
    try:
        outcome = services.admit(
            calling_ae=str(primitive.calling_ae_title),
            called_ae=str(primitive.called_ae_title),
            address=address,
        )
    except Exception:
        # pynetdicom would log a notification handler's error and accept the association: refuse
        # it instead (transient: the database may answer again).
        logger.exception("association from %s: admission failed", address)
        _reject(assoc, result=0x02, diagnostic=0x01)
        return
    finally:
        _drop_broken_connections()
    if isinstance(outcome, services.Rejection):
        logger.warning(
            "association from %s (calling AE %r) rejected: %s",
            address,
            str(primitive.calling_ae_title),
            outcome.reason,
        )
        _reject(assoc, result=0x01, diagnostic=outcome.diagnostic)
        return
    setattr(assoc, _PEER, outcome)


def _reject(assoc, *, result: int, diagnostic: int) -> None:
    """A-ASSOCIATE-RJ from the service user (source 1), as pynetdicom's own rejections end."""
    connections.close_all()  # no release or abort follows
    assoc.acse.send_reject(result, 0x01, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def on_echo(event) -> int:
    return services.SUCCESS


def on_store(event) -> Dataset:
    peer: services.Peer = getattr(event.assoc, _PEER)
    setattr(event.assoc, _RECEIVED, 0)  # the next message's count starts here
    request = event.request
    try:
        dicom_file, status, comment = services.store_instance(
            peer=peer,
            dataset=request.DataSet,
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
        )
    finally:
        _drop_broken_connections()
    answer = Dataset()
    answer.Status = status
    if comment:
        answer.ErrorComment = comment
    if dicom_file is not None:
        logger.info("C-STORE from %s stored file %s", peer.calling_ae, dicom_file.id)
    else:
        logger.warning("C-STORE from %s refused: 0x%04X %s", peer.calling_ae, status, comment)
    return answer


def on_find(event):
    """Answer a C-FIND: pending identifiers while not cancelled, then the final status."""
    peer: services.Peer = getattr(event.assoc, _PEER)
    setattr(event.assoc, _RECEIVED, 0)
    try:
        identifier = _identifier(event)
        if identifier is None:
            answer = find.FindAnswer(status=find.UNABLE_TO_PROCESS, comment="identifier cannot be decoded")
            logger.warning("C-FIND from %s: identifier cannot be decoded", peer.calling_ae)
        else:
            patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelFind
            answer = find.answer_find(peer=peer, identifier=identifier, patient_root=patient_root)
    finally:
        _drop_broken_connections()
    if answer.status not in (find.SUCCESS, find.LIMIT_REACHED):
        logger.warning("C-FIND from %s refused: 0x%04X %s", peer.calling_ae, answer.status, answer.comment)
        yield _final(answer.status, answer.comment)
        return
    sent, status = 0, answer.status
    for dataset in answer.identifiers:
        if sent and sent % LISTEN_EVERY == 0:
            _let_the_peer_speak(event.assoc)
        if event.is_cancelled:
            status = find.CANCELLED
            break
        yield answer.pending_status, dataset
        sent += 1
    else:
        if event.is_cancelled:
            status = find.CANCELLED
    try:
        find.record_find(peer=peer, answer=answer, sent=sent, status=status)
    finally:
        _drop_broken_connections()
    if status == find.LIMIT_REACHED:
        _drop_trailing_success(event.assoc, message_id=event.request.MessageID)
    logger.info("C-FIND from %s: 0x%04X after %s matches", peer.calling_ae, status, sent)
    yield _final(status, "")


# Every this many pending responses, the peer's messages are read (a C-CANCEL among them).
LISTEN_EVERY = 32


def _let_the_peer_speak(assoc, *, seconds: float = 2.0) -> None:
    """Wait until pynetdicom's DUL has sent what is queued, and a moment more: it reads from the
    peer only when it has nothing to send, so on a busy machine a C-CANCEL was read only after the
    last match had gone out (the fresh-clone run's failure of the C-CANCEL test)."""
    queued = assoc.dul.to_provider_queue
    deadline = time.monotonic() + seconds
    while not queued.empty() and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.002)  # one turn of the DUL's loop, which then looks at the socket


def _drop_trailing_success(assoc, *, message_id: int) -> None:
    """pynetdicom's C-FIND SCP takes a warning (0xB001, the cap) for a response that is not the
    last: it sends it, then a 0x0000 of its own when the handler ends. A peer takes the warning as
    final (PS3.7 9.1.2: every status but pending is) and the stray 0x0000 as the answer to its next
    C-FIND on the association, which then finds nothing. The next 0x0000 C-FIND response to
    ``message_id`` is not sent."""
    dimse = assoc.dimse
    send = dimse.send_msg

    def send_msg(primitive, context_id: int) -> None:
        if (
            isinstance(primitive, C_FIND)
            and primitive.Status == find.SUCCESS
            and primitive.MessageIDBeingRespondedTo == message_id
        ):
            dimse.send_msg = send
            return
        send(primitive, context_id)

    dimse.send_msg = send_msg


def _final(status: int, comment: str) -> tuple[Dataset, None]:
    answer = Dataset()
    answer.Status = status
    if comment:
        answer.ErrorComment = comment
    return answer, None


def _identifier(event) -> Dataset | None:
    try:
        return event.identifier
    except Exception:
        return None


def on_move(event):
    """Answer a C-MOVE: the destination, the number of sub-operations, then one dataset at a time."""
    peer: services.Peer = getattr(event.assoc, _PEER)
    setattr(event.assoc, _RECEIVED, 0)
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelMove
    try:
        plan = retrieve.plan_retrieve(
            peer=peer,
            service="C-MOVE",
            identifier=_identifier(event),
            patient_root=patient_root,
            move_destination_title=event.move_destination or "",
        )
    finally:
        _drop_broken_connections()
    if isinstance(plan, retrieve.Refusal):
        logger.warning("C-MOVE from %s refused: 0x%04X %s", peer.calling_ae, plan.status, plan.comment)
        if plan.destination is None:
            yield None, None  # pynetdicom answers 0xA801
            return
        # pynetdicom associates with the destination before it takes a failure status (see dimse.retrieve).
        yield plan.destination.host, plan.destination.port, {"contexts": [build_context(Verification)]}
        yield 1
        yield _final(plan.status, plan.comment)
        return
    outcomes = retrieve.SubOperations()
    destination = plan.destination
    yield (
        destination.host,
        destination.port,
        {
            "contexts": plan.presentation_contexts(),
            "evt_handlers": [(evt.EVT_DIMSE_RECV, outcomes.on_response), *REQUESTOR_HANDLERS],
        },
    )
    yield from _sub_operations(event, plan, outcomes)


def on_get(event):
    """Answer a C-GET: the number of sub-operations, then one dataset at a time over this association."""
    peer: services.Peer = getattr(event.assoc, _PEER)
    setattr(event.assoc, _RECEIVED, 0)
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelGet
    try:
        plan = retrieve.plan_retrieve(
            peer=peer, service="C-GET", identifier=_identifier(event), patient_root=patient_root
        )
    finally:
        _drop_broken_connections()
    if isinstance(plan, retrieve.Refusal):
        logger.warning("C-GET from %s refused: 0x%04X %s", peer.calling_ae, plan.status, plan.comment)
        yield 1
        yield _final(plan.status, plan.comment)
        return
    outcomes = retrieve.SubOperations()
    event.assoc.bind(evt.EVT_DIMSE_RECV, outcomes.on_response)
    try:
        yield from _sub_operations(event, plan, outcomes)
    finally:
        event.assoc.unbind(evt.EVT_DIMSE_RECV, outcomes.on_response)


def _sub_operations(event, plan: retrieve.RetrievePlan, outcomes: retrieve.SubOperations):
    """The number of sub-operations, then (pending, dataset) per instance while not cancelled; the
    audit row once they are done, cancelled, or pynetdicom stopped asking (the destination refused
    the association, the peer went away)."""
    recorded = False

    def record(**kwargs) -> None:
        nonlocal recorded
        recorded = True
        try:
            status = retrieve.record_retrieve(plan=plan, outcomes=outcomes, **kwargs)
        finally:
            _drop_broken_connections()
        completed, failed, warning = outcomes.counts()
        logger.info(
            "%s from %s: 0x%04X, %s completed, %s failed, %s warning",
            plan.service,
            plan.peer.calling_ae,
            status,
            completed,
            failed,
            warning,
        )

    try:
        if not plan.instances:
            record()
            yield 0
            return
        yield len(plan.instances)
        for item in plan.instances:
            if event.is_cancelled:
                record(cancelled=True)
                yield _final(retrieve.CANCELLED, "")
                return
            outcomes.sending(item)
            try:
                dataset = retrieve.read_instance(item)
            except Exception:
                logger.exception(
                    "%s from %s: file %s cannot be read", plan.service, plan.peer.calling_ae, item.file_id
                )
                # A dataset without its SOP Class UID cannot be sent: pynetdicom counts the
                # sub-operation failed and lists the instance in Failed SOP Instance UID List.
                dataset = Dataset()
                dataset.SOPInstanceUID = item.sop_instance_uid
            yield retrieve.PENDING, dataset
            del dataset  # one instance in memory at a time
        record()
    finally:
        if not recorded:
            # Closed before its end: a destination that refused the association is 0xA801.
            nothing_sent = not outcomes.attempted and plan.service == "C-MOVE"
            record(status=retrieve.MOVE_DESTINATION_UNKNOWN if nothing_sent else None)


# --- the listening socket -------------------------------------------------------------------

PDU_HEADER_SIZE = 6  # type (1), reserved (1), length (4, big-endian): PS3.8 9.3
P_DATA_TF_TYPE = 0x04
# A-ASSOCIATE-RQ/AC carry the presentation contexts (a few kB for a hundred); the other PDUs are
# a few bytes. Only P-DATA-TF is bounded by the negotiated maximum length.
OTHER_PDU_MAX = 1024**2


class PduTooLongError(ConnectionAbortedError):
    pass


class FramedSocket:
    """A peer's socket, following the upper layer's framing (PS3.8 9.3) as its bytes are read.

    pynetdicom reads the length a PDU declares and then gathers that many bytes in memory, up to
    4 GiB, before any handler runs. Here a PDU longer than the node accepts (a P-DATA-TF beyond
    ``DICOM_SCP_MAX_PDU``, any other beyond 1 MiB) ends the connection as soon as its header is in:
    the read raises, which pynetdicom takes as the transport closing. Everything else is the socket's.
    """

    def __init__(self, sock: socket.socket, *, max_pdu: int, address: str) -> None:
        self._socket, self._max_pdu, self._address = sock, max_pdu, address
        self._header = bytearray()
        self._left = 0  # bytes of the current PDU's body still to come

    def __getattr__(self, name: str):
        return getattr(self._socket, name)

    def recv(self, size: int, *flags) -> bytes:
        data = self._socket.recv(size, *flags)
        self._follow(data)
        return data

    def _follow(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            if self._left:
                taken = min(self._left, len(data) - at)
                self._left -= taken
                at += taken
                continue
            taken = min(PDU_HEADER_SIZE - len(self._header), len(data) - at)
            self._header += data[at : at + taken]
            at += taken
            if len(self._header) == PDU_HEADER_SIZE:
                pdu_type, length = self._header[0], int.from_bytes(self._header[2:], "big")
                self._header.clear()
                limit = self._max_pdu if pdu_type == P_DATA_TF_TYPE else OTHER_PDU_MAX
                if length > limit:
                    logger.warning(
                        "connection from %s closed: a PDU of type 0x%02X declares %s bytes, more than %s",
                        self._address,
                        pdu_type,
                        length,
                        limit,
                    )
                    raise PduTooLongError(f"PDU of {length} bytes is longer than {limit}")
                self._left = length


class BoundedRequestHandler(RequestHandler):
    """pynetdicom's handler of a new connection, on a :class:`FramedSocket` with a read timeout
    and ``TCP_NODELAY`` (a C-STORE response is small and waits for no more data)."""

    def setup(self) -> None:
        super().setup()
        self.request.settimeout(settings.DICOM_SCP_NETWORK_TIMEOUT)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = FramedSocket(
            self.request, max_pdu=settings.DICOM_SCP_MAX_PDU, address=str(self.client_address[0])
        )


def start_server(ae: AE, address: tuple[str, int]) -> ThreadedAssociationServer:
    """Listen on ``address`` with :func:`handlers` and :class:`BoundedRequestHandler`, serving from a
    thread of its own (as ``AE.start_server(block=False)`` does); ``server.shutdown()`` stops it."""
    server = ae.make_server(
        address,
        evt_handlers=handlers(),
        server_class=ThreadedAssociationServer,
        request_handler=BoundedRequestHandler,
    )
    ae._servers.append(server)  # as start_server does: AE.shutdown and server.shutdown() expect it
    threading.Thread(target=server.serve_forever, name="dimse-acceptor", daemon=True).start()
    return server
