"""C-FIND without the network: identifier -> search, match -> response identifier, access, audit."""

import pytest
from pydicom.uid import generate_uid

from audit.models import AuditLog
from dicom.services.search import INSTANCE, SERIES, STUDY, Match
from dicom.tests.services.dicom_builders import query_identifier as identifier
from dicom.tests.services.dicom_builders import search_instance
from dimse import find, services
from dimse.tests.factories import ApplicationEntityFactory

pytestmark = pytest.mark.django_db


# --- identifier -> search -----------------------------------------------------------------------


def test_keys_with_a_value_match_and_empty_ones_are_returned():
    request = find.translate(
        identifier(
            "STUDY", PatientName="doe*", StudyDate="20040101-20041231", PatientID="", StudyInstanceUID=""
        )
    )
    assert request.level == STUDY
    assert request.filters == {"PatientName": "doe*", "StudyDate": "20040101-20041231"}
    assert request.return_keys == ["StudyDate", "PatientName", "PatientID", "StudyInstanceUID"]
    assert not request.unsupported


@pytest.mark.parametrize(
    ("level", "expected"), [("SERIES", SERIES), ("IMAGE", INSTANCE), ("image ", INSTANCE)]
)
def test_levels(level, expected):
    assert find.translate(identifier(level)).level == expected


def test_a_uid_list_and_upper_unique_keys_narrow_the_search():
    first, second, series = generate_uid(), generate_uid(), generate_uid()
    ds = identifier("IMAGE", StudyInstanceUID=[first, second], SeriesInstanceUID=series, SOPInstanceUID="")
    request = find.translate(ds)
    assert request.filters == {"StudyInstanceUID": f"{first}\\{second}", "SeriesInstanceUID": series}


@pytest.mark.parametrize("level", [None, "PATIENT", "FRAME", ["STUDY", "SERIES"]])
def test_no_valid_level_does_not_match_the_sop_class(level):
    with pytest.raises(find.IdentifierMismatchError):
        find.translate(identifier(level))


def test_unsupported_keys_are_returned_empty_with_a_warning():
    # A lower level's key, an attribute the search does not know, one it returns but cannot match on.
    request = find.translate(
        identifier("STUDY", SOPInstanceUID="1.2.3", OtherPatientIDs="", PatientBirthDate="19700101")
    )
    assert request.filters == {}
    assert request.return_keys == ["SOPInstanceUID", "PatientBirthDate", "OtherPatientIDs"]
    assert request.unsupported


# --- match -> response identifier ---------------------------------------------------------------


def test_a_match_becomes_a_response_with_the_keys_asked_for():
    request = find.translate(identifier("SERIES", PatientName="", Modality="CT", OtherPatientIDs=""))
    match = Match(
        study="1.2.3",
        series="1.2.3.4",
        instance=None,
        attributes={"PatientName": ["Doe^Jane"], "Modality": ["CT"], "StudyDate": ["20040105"]},
    )
    ds = find.response_identifier(match, request=request, retrieve_ae_title="DICOMSVC")
    assert ds.QueryRetrieveLevel == "SERIES"
    assert ds.RetrieveAETitle == "DICOMSVC"
    assert str(ds.PatientName) == "Doe^Jane"
    assert ds.Modality == "CT"
    assert ds.StudyInstanceUID == "1.2.3" and ds.SeriesInstanceUID == "1.2.3.4"
    assert "OtherPatientIDs" in ds and ds.OtherPatientIDs in (None, "")
    assert "StudyDate" not in ds  # not asked for
    assert "SpecificCharacterSet" not in ds
    assert "SOPInstanceUID" not in ds


def test_non_ascii_text_is_sent_as_utf8():
    request = find.translate(identifier("STUDY", PatientName=""))
    match = Match(study="1.2.3", series=None, instance=None, attributes={"PatientName": ["Müller^Jürgen"]})
    ds = find.response_identifier(match, request=request, retrieve_ae_title="DICOMSVC")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Jürgen"


# --- the search as the association's account ---------------------------------------------------


def store(client, **attributes) -> None:
    response = client.post(
        "/api/dicom/upload", data=search_instance(**attributes), content_type="application/dicom"
    )
    assert response.status_code == 200, response.content


def peer_for(entity) -> services.Peer:
    peer = services.admit(calling_ae=entity.ae_title, called_ae="DICOMSVC", address="10.0.0.9")
    assert isinstance(peer, services.Peer)
    return peer


def test_answer_find_sees_only_the_accounts_files_and_is_audited(api, user, other_api):
    mine, theirs = generate_uid(), generate_uid()
    store(api, study_uid=mine, PatientName="Doe^Jane", StudyDate="20040105")
    store(other_api, study_uid=theirs, PatientName="Doe^John", StudyDate="20040106")
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_query=True))
    answer = find.answer_find(
        peer=peer, identifier=identifier("STUDY", PatientName="DOE*", StudyInstanceUID="")
    )
    assert answer.status == find.SUCCESS
    assert [ds.StudyInstanceUID for ds in answer.identifiers] == [mine]
    find.record_find(peer=peer, answer=answer, sent=1, status=answer.status)
    row = AuditLog.objects.get(action=AuditLog.Action.SEARCH)
    assert row.success and row.reason == "DIMSE C-FIND WS1 -> DICOMSVC: 0x0000 1 matches"
    assert f"study:{mine}" in row.targets and "Doe" not in row.reason


def test_the_cap_ends_with_the_limit_reached_warning(api, user):
    for _ in range(3):
        store(api, PatientName="Doe^Jane")
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_query=True))
    answer = find.answer_find(peer=peer, identifier=identifier("STUDY"), limit=2)
    assert (answer.status, len(answer.identifiers)) == (find.LIMIT_REACHED, 2)


def test_an_ae_without_may_query_is_refused_and_audited(api, user):
    store(api, PatientName="Doe^Jane")
    peer = peer_for(ApplicationEntityFactory(ae_title="CT1", account=user, may_query=False))
    answer = find.answer_find(peer=peer, identifier=identifier("STUDY"))
    assert (answer.status, answer.identifiers) == (find.NOT_AUTHORIZED, [])
    row = AuditLog.objects.get(action=AuditLog.Action.SEARCH)
    assert not row.success and row.reason.startswith("DIMSE C-FIND CT1 -> DICOMSVC: 0x0124")


@pytest.mark.parametrize(
    ("ds", "status"),
    [
        (identifier(None, PatientName="Doe"), find.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
        (identifier("STUDY", StudyDate="2004-01-0x"), find.UNABLE_TO_PROCESS),
        (identifier("STUDY", PatientName="SECRET*" * 20), find.UNABLE_TO_PROCESS),
    ],
)
def test_a_malformed_identifier_is_a_failure_naming_no_value(user, ds, status):
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_query=True))
    answer = find.answer_find(peer=peer, identifier=ds)
    assert answer.status == status and answer.identifiers == []
    assert "SECRET" not in answer.comment and "0x" not in answer.comment and len(answer.comment) <= 64
    assert AuditLog.objects.get(action=AuditLog.Action.SEARCH).success is False


def test_an_account_that_may_not_see_patient_data_gets_it_masked_and_cannot_match_on_it(api, staff_user):
    study = generate_uid()
    store(api, study_uid=study, PatientName="Secret^Patient", StudyDate="20240105")
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=staff_user, may_query=True))
    answer = find.answer_find(peer=peer, identifier=identifier("STUDY", PatientName="", StudyInstanceUID=""))
    (ds,) = answer.identifiers
    assert ds.StudyInstanceUID == study and ds.PatientName in (None, "")
    for keys in ({"PatientName": "Secret*"}, {"StudyDate": "20240101-20240131"}):
        assert find.answer_find(peer=peer, identifier=identifier("STUDY", **keys)).identifiers == []


# --- Patient Root ------------------------------------------------------------------------------


def test_patient_root_has_a_patient_level_and_needs_the_patient_id_below_it():
    request = find.translate(identifier("PATIENT", PatientName="doe*", PatientID=""), patient_root=True)
    assert (request.level, request.filters) == ("patient", {"PatientName": "doe*"})
    request = find.translate(identifier("STUDY", PatientID="PAT-1", StudyDate=""), patient_root=True)
    assert (request.level, request.filters) == (STUDY, {"PatientID": "PAT-1"})
    for keys in ({}, {"PatientID": ""}, {"PatientID": "PAT*"}, {"PatientID": ["PAT-1", "PAT-2"]}):
        with pytest.raises(find.IdentifierMismatchError, match="needs one Patient ID"):
            find.translate(identifier("SERIES", **keys), patient_root=True)


def test_patient_level_answers_patients_with_their_counts(api, user, other_api):
    first, second = generate_uid(), generate_uid()
    store(api, study_uid=first, PatientID="PAT-1", PatientName="Doe^Jane", PatientSex="F")
    store(api, study_uid=first, PatientID="PAT-1", PatientName="Doe^Jane", PatientSex="F")
    store(api, study_uid=second, PatientID="PAT-1", PatientName="Doe^Jane", PatientSex="F")
    store(api, PatientID="PAT-2", PatientName="Roe^Richard")
    store(other_api, PatientID="PAT-1", PatientName="Doe^Jane")
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_query=True))
    ds = identifier(
        "PATIENT", PatientName="DOE*", PatientID="", PatientSex="", NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances="", StudyDate="",
    )  # fmt: skip
    answer = find.answer_find(peer=peer, identifier=ds, patient_root=True)
    assert answer.status == find.SUCCESS and answer.pending_status == find.PENDING_WARNING  # StudyDate
    (found,) = answer.identifiers
    assert found.QueryRetrieveLevel == "PATIENT" and found.PatientID == "PAT-1" and found.PatientSex == "F"
    counts = (
        found.NumberOfPatientRelatedStudies,
        found.NumberOfPatientRelatedSeries,  # each instance stored has a series of its own
        found.NumberOfPatientRelatedInstances,
    )
    assert tuple(int(n) for n in counts) == (2, 3, 3)
    assert "StudyInstanceUID" not in found and found.StudyDate in (None, "")
    find.record_find(peer=peer, answer=answer, sent=1, status=answer.status)
    row = AuditLog.objects.get(action=AuditLog.Action.SEARCH)
    assert row.targets == [] and "PAT-1" not in row.reason


def test_patient_root_study_level_is_narrowed_to_the_patient(api, user):
    mine = generate_uid()
    store(api, study_uid=mine, PatientID="PAT-1")
    store(api, PatientID="PAT-2")
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=user, may_query=True))
    ds = identifier("STUDY", PatientID="PAT-1", StudyInstanceUID="")
    answer = find.answer_find(peer=peer, identifier=ds, patient_root=True)
    assert [(d.PatientID, d.StudyInstanceUID) for d in answer.identifiers] == [("PAT-1", mine)]
    refused = find.answer_find(
        peer=peer, identifier=identifier("STUDY", StudyInstanceUID=""), patient_root=True
    )
    assert refused.status == find.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


def test_an_account_that_may_not_see_patient_data_finds_no_original_patient(api, staff_user):
    store(api, PatientID="PAT-1", PatientName="Secret^Patient")
    peer = peer_for(ApplicationEntityFactory(ae_title="WS1", account=staff_user, may_query=True))
    answer = find.answer_find(peer=peer, identifier=identifier("PATIENT", PatientID=""), patient_root=True)
    assert answer.status == find.SUCCESS and answer.identifiers == []
