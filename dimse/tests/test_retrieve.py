"""C-MOVE and C-GET without the network: identifier -> instances, access, destination, outcomes, audit."""

from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid

from audit.models import AuditLog
from dicom.models import DicomFile
from dicom.services.search import INSTANCE, SERIES, STUDY
from dicom.tests.services.dicom_builders import query_identifier as identifier
from dicom.tests.services.dicom_builders import search_instance
from dimse import retrieve, services
from dimse.tests.factories import ApplicationEntityFactory

pytestmark = pytest.mark.django_db


def store(client, anonymize: bool = False, **attributes) -> DicomFile:
    url = "/api/dicom/upload" + ("?anonymize=true" if anonymize else "")
    response = client.post(url, data=search_instance(**attributes), content_type="application/dicom")
    assert response.status_code == 200, response.content
    return DicomFile.objects.get(pk=response.json()["file_id"])


def peer_for(entity) -> services.Peer:
    peer = services.admit(calling_ae=entity.ae_title, called_ae="DICOMSVC", address="10.0.0.9")
    assert isinstance(peer, services.Peer)
    return peer


# --- identifier -> request ----------------------------------------------------------------------


def test_study_root_levels_and_their_unique_keys():
    study, series, first, second = (generate_uid() for _ in range(4))
    request = retrieve.translate(identifier("STUDY", StudyInstanceUID=[study, series]), patient_root=False)
    assert (request.level, request.studies) == (STUDY, (study, series))
    request = retrieve.translate(
        identifier("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=[first, second]),
        patient_root=False,
    )
    assert (request.level, request.series, request.instances) == (INSTANCE, (series,), (first, second))


def test_patient_root_carries_the_patient_id_at_every_level():
    study = generate_uid()
    request = retrieve.translate(identifier("PATIENT", PatientID="PAT-1"), patient_root=True)
    assert (request.level, request.patient_id, request.studies) == ("patient", "PAT-1", ())
    request = retrieve.translate(
        identifier("SERIES", PatientID="PAT-1", StudyInstanceUID=study, SeriesInstanceUID="1.2"),
        patient_root=True,
    )
    assert (request.level, request.patient_id, request.studies, request.series) == (
        SERIES,
        "PAT-1",
        (study,),
        ("1.2",),
    )


@pytest.mark.parametrize(
    ("ds", "patient_root", "detail"),
    [
        (
            identifier(None, StudyInstanceUID="1.2"),
            False,
            "Query/Retrieve Level is not STUDY, SERIES or IMAGE",
        ),
        (
            identifier("PATIENT", PatientID="PAT-1"),
            False,
            "Query/Retrieve Level is not STUDY, SERIES or IMAGE",
        ),
        (identifier("STUDY", StudyInstanceUID="1.2"), True, "PatientID is missing"),
        (identifier("SERIES", SeriesInstanceUID="1.2.3"), False, "StudyInstanceUID is missing"),
        (identifier("SERIES", StudyInstanceUID="1.2"), False, "SeriesInstanceUID is missing"),
        (
            identifier("SERIES", StudyInstanceUID=["1.2", "1.3"], SeriesInstanceUID="1.2.3"),
            False,
            "StudyInstanceUID has more than one value above the retrieve level",
        ),
        (
            identifier("STUDY", StudyInstanceUID="1.2", PatientName="SECRET^NAME"),
            False,
            "PatientName is not a unique key of this level",
        ),
        (
            identifier("STUDY", StudyInstanceUID="1.2", PatientID="SECRET"),
            False,
            "PatientID is not a unique key",
        ),
    ],
)
def test_an_identifier_that_does_not_match_the_model_names_no_value(ds, patient_root, detail):
    with pytest.raises(retrieve.RetrieveIdentifierError) as raised:
        retrieve.translate(ds, patient_root=patient_root)
    assert raised.value.detail.startswith(detail) and "SECRET" not in raised.value.detail


def test_empty_attributes_are_not_keys():
    ds = identifier("STUDY", StudyInstanceUID="1.2", PatientName="", SpecificCharacterSet="ISO_IR 100")
    assert retrieve.translate(ds, patient_root=False).studies == ("1.2",)


# --- the instances the account may retrieve -------------------------------------------------------


def test_only_the_accounts_newest_file_per_instance(api, user, other_api):
    study = generate_uid()
    mine = store(api, study_uid=study)
    theirs = store(other_api, study_uid=study)
    request = retrieve.RetrieveRequest(level=STUDY, studies=(study,))
    found = retrieve.matching_instances(user, request)
    assert [i.file_id for i in found] == [str(mine.id)]
    # The same instance stored again: the newest file is sent, once.
    again = DicomFile.objects.create(
        **{
            f.name: getattr(mine, f.name)
            for f in DicomFile._meta.fields
            if f.name not in ("id", "created_at")
        }
    )
    found = retrieve.matching_instances(user, request)
    assert [i.file_id for i in found] == [str(again.id)] and str(theirs.id) not in {i.file_id for i in found}


def test_patient_level_matches_the_patient_id(api, user):
    first = store(api, PatientID="PAT-1")
    store(api, PatientID="PAT-2")
    found = retrieve.matching_instances(user, retrieve.RetrieveRequest(level="patient", patient_id="PAT-1"))
    assert [i.sop_instance_uid for i in found] == [first.sop_instance_uid]


def test_originals_need_the_patient_data_permission(api, staff_user):
    study = generate_uid()
    store(api, study_uid=study, PatientID="PAT-1")
    with pytest.raises(retrieve.RetrieveNotAllowedError):
        retrieve.matching_instances(staff_user, retrieve.RetrieveRequest(level=STUDY, studies=(study,)))
    # By Patient ID, such an account reaches de-identified files only (no oracle on the real value).
    assert (
        retrieve.matching_instances(staff_user, retrieve.RetrieveRequest(level="patient", patient_id="PAT-1"))
        == []
    )


# --- plans and refusals -------------------------------------------------------------------------------


def test_a_move_plan_names_the_destination_and_the_instances(api, user):
    study = generate_uid()
    store(api, study_uid=study)
    ApplicationEntityFactory(ae_title="DEST", account=user, host="10.0.0.5", port=104, may_store=False)
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_retrieve=True))
    plan = retrieve.plan_retrieve(
        peer=peer,
        service="C-MOVE",
        identifier=identifier("STUDY", StudyInstanceUID=study),
        patient_root=False,
        move_destination_title="DEST ",
    )
    assert isinstance(plan, retrieve.RetrievePlan)
    assert plan.destination == retrieve.Destination(ae_title="DEST", host="10.0.0.5", port=104)
    assert [i.study_instance_uid for i in plan.instances] == [study]
    assert plan.reason == "DIMSE C-MOVE WS1 -> DICOMSVC to DEST"
    assert not AuditLog.objects.filter(action=AuditLog.Action.DOWNLOAD).exists()  # audited once sent


@pytest.mark.parametrize(
    ("may_retrieve", "destination", "status"),
    [
        (False, "DEST", retrieve.NOT_AUTHORIZED),
        (True, "UNKNOWN", retrieve.MOVE_DESTINATION_UNKNOWN),
        (True, "NOPORT", retrieve.MOVE_DESTINATION_UNKNOWN),
        (True, "OFF", retrieve.MOVE_DESTINATION_UNKNOWN),
    ],
)
def test_refusals_are_audited(user, may_retrieve, destination, status):
    ApplicationEntityFactory(ae_title="DEST", account=user, host="10.0.0.5", port=104)
    ApplicationEntityFactory(ae_title="NOPORT", account=user, host="10.0.0.5")
    ApplicationEntityFactory(ae_title="OFF", account=user, host="10.0.0.5", port=104, enabled=False)
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_retrieve=may_retrieve))
    refusal = retrieve.plan_retrieve(
        peer=peer,
        service="C-MOVE",
        identifier=identifier("STUDY", StudyInstanceUID="1.2"),
        patient_root=False,
        move_destination_title=destination,
    )
    assert isinstance(refusal, retrieve.Refusal) and refusal.status == status
    assert (refusal.destination is not None) == (destination == "DEST")
    row = AuditLog.objects.get(action=AuditLog.Action.DOWNLOAD)
    assert not row.success
    assert row.reason.startswith(f"DIMSE C-MOVE WS1 -> DICOMSVC to {destination}: 0x{status:04X}")


def test_an_undecodable_identifier_is_unable_to_process(user):
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_retrieve=True))
    refusal = retrieve.plan_retrieve(peer=peer, service="C-GET", identifier=None, patient_root=False)
    assert (refusal.status, refusal.comment) == (retrieve.UNABLE_TO_PROCESS, "identifier cannot be decoded")


def test_the_loopback_default_ae_may_retrieve(settings):
    settings.DICOM_SCP_TRUST_LOOPBACK = True
    peer = services.admit(calling_ae="ANY", called_ae="DICOMSVC", address="127.0.0.1")
    assert peer.may_retrieve and peer.account.username == settings.DICOM_SYSTEM_USERNAME


# --- sub-operations and the audit row --------------------------------------------------------------


def instance(sop: str, syntax: str = ExplicitVRLittleEndian, sop_class: str = "1.2.840.10008.5.1.4.1.1.2"):
    return retrieve.Instance(
        file_id=sop,
        storage_key="",
        sop_class_uid=sop_class,
        sop_instance_uid=sop,
        study_instance_uid="1.2",
        series_instance_uid="1.2.3",
        transfer_syntax_uid=syntax,
    )


def store_response(sop: str, status: int):
    command = Dataset()
    command.CommandField = 0x8001
    command.AffectedSOPInstanceUID = sop
    command.Status = status
    return SimpleNamespace(message=SimpleNamespace(command_set=command))


def test_outcomes_are_counted_from_the_store_responses():
    outcomes = retrieve.SubOperations()
    for sop, status in (("1.1", 0x0000), ("1.2", 0xB007), ("1.3", 0xA700)):
        outcomes.sending(instance(sop))
        outcomes.on_response(store_response(sop, status))
    outcomes.sending(instance("1.4"))  # never answered: no presentation context for it
    assert outcomes.counts() == (1, 2, 1)
    assert [i.sop_instance_uid for i in outcomes.sent()] == ["1.1", "1.2"]
    assert outcomes.final_status() == retrieve.SUB_OPERATIONS_FAILED
    assert outcomes.final_status(cancelled=True) == retrieve.CANCELLED
    none_taken = retrieve.SubOperations(attempted=[instance("1.5")])
    assert none_taken.final_status() == retrieve.UNABLE_TO_PERFORM_SUB_OPERATIONS
    assert retrieve.SubOperations().final_status() == retrieve.SUCCESS


def test_the_audit_row_names_what_the_peer_took(user):
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_retrieve=True))
    plan = retrieve.RetrievePlan(
        peer=peer, service="C-GET", instances=[instance("1.1"), instance("1.2"), instance("1.3")]
    )
    outcomes = retrieve.SubOperations()
    for sop, status in (("1.1", 0x0000), ("1.2", 0xA700)):
        outcomes.sending(instance(sop))
        outcomes.on_response(store_response(sop, status))
    assert retrieve.record_retrieve(plan=plan, outcomes=outcomes, cancelled=True) == retrieve.CANCELLED
    row = AuditLog.objects.get(action=AuditLog.Action.DOWNLOAD)
    assert row.success and row.username == user.username
    assert row.reason == "DIMSE C-GET WS1 -> DICOMSVC: 0xFE00 1 completed, 1 failed, 0 warning, 1 remaining"
    assert row.targets == ["study:1.2", "series:1.2.3", "instance:1.1"]


def test_a_retrieve_the_peer_took_nothing_of_is_a_failure_row(user):
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_retrieve=True))
    plan = retrieve.RetrievePlan(peer=peer, service="C-GET", instances=[instance("1.1")])
    outcomes = retrieve.SubOperations(attempted=[instance("1.1")])
    assert retrieve.record_retrieve(plan=plan, outcomes=outcomes) == retrieve.UNABLE_TO_PERFORM_SUB_OPERATIONS
    row = AuditLog.objects.get(action=AuditLog.Action.DOWNLOAD)
    assert not row.success and row.reason.startswith(
        "DIMSE C-GET WS1 -> DICOMSVC: 0xA702 0 completed, 1 failed"
    )


def test_the_contexts_a_move_proposes():
    plan = retrieve.RetrievePlan(
        peer=None,
        service="C-MOVE",
        instances=[instance("1.1", ImplicitVRLittleEndian), instance("1.2", RLELossless), instance("1.3")],
    )
    proposed = [(c.abstract_syntax, c.transfer_syntax) for c in plan.presentation_contexts()]
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert proposed == [
        (ct, [RLELossless]),
        (ct, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
    ]


def test_through_the_deid_ae_title_only_de_identified_files_are_retrieved(api, user):
    original = store(api, study_uid=generate_uid())
    deidentified = store(api, anonymize=True, study_uid=generate_uid())
    entity = ApplicationEntityFactory(account=user, may_retrieve=True)

    def sent(called: str, file: DicomFile) -> list[str]:
        peer = services.admit(calling_ae=entity.ae_title, called_ae=called, address="10.0.0.9")
        request = identifier("STUDY", StudyInstanceUID=file.study_instance_uid)
        plan = retrieve.plan_retrieve(peer=peer, service="C-GET", identifier=request, patient_root=False)
        return [i.file_id for i in plan.instances]

    assert sent("DICOMSVC", original) == [str(original.id)]
    assert sent("DICOMSVC", deidentified) == [str(deidentified.id)]
    assert sent("DEID", original) == []
    assert sent("DEID", deidentified) == [str(deidentified.id)]
