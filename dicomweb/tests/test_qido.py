"""QIDO-RS matching, results, access and errors, through DRF's test clients (SQLite and PostgreSQL).

Files are stored through the REST upload (``application/dicom`` body), as a hospital stores them;
each test makes its own studies with fresh UIDs.
"""

import pytest
from django.contrib.auth.models import Permission
from pydicom.uid import generate_uid

from audit.models import AuditLog
from dicom.models import DicomFile
from dicom.tests.services.dicom_builders import search_instance
from dicomweb import qido

pytestmark = pytest.mark.django_db

DICOM_JSON = "application/dicom+json"
PATIENT_NAME, STUDY_DATE, MODALITIES = "00100010", "00080020", "00080061"
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def store(client, query: str = "", **attributes) -> DicomFile:
    response = client.post(
        f"/api/dicom/upload{query}", data=search_instance(**attributes), content_type="application/dicom"
    )
    assert response.status_code == 200, response.content
    return DicomFile.objects.get(pk=response.json()["file_id"])


def get(client, path: str, accept: str = DICOM_JSON, **params):
    return client.get(f"/dicomweb/{path}", params, HTTP_ACCEPT=accept)


def found(client, path: str = "studies", **params) -> list[dict]:
    response = get(client, path, **params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == DICOM_JSON
    return response.json()


def uids(results: list[dict], tag: str = STUDY_UID) -> set[str]:
    return {result[tag]["Value"][0] for result in results}


def value(result: dict, tag: str):
    return result[tag].get("Value", [None])[0]


@pytest.fixture
def three_studies(api):
    """Doe 2024-01-05 CT (two series, three instances), Roe 2024-02-10 MR, Smith 2023-12-31 CT+SR."""
    doe, roe, smith = generate_uid(), generate_uid(), generate_uid()
    doe_ct = generate_uid()
    common = {"StudyTime": "101500", "ReferringPhysicianName": "House^Gregory"}
    store(api, study_uid=doe, series_uid=doe_ct, PatientName="Doe^Jane", PatientID="P-1", StudyDate="20240105",
          AccessionNumber="ACC1", StudyID="S1", SeriesNumber="1", InstanceNumber="1", **common)  # fmt: skip
    store(api, study_uid=doe, series_uid=doe_ct, PatientName="Doe^Jane", PatientID="P-1", StudyDate="20240105",
          AccessionNumber="ACC1", StudyID="S1", SeriesNumber="1", InstanceNumber="2", **common)  # fmt: skip
    store(api, study_uid=doe, PatientName="Doe^Jane", PatientID="P-1", StudyDate="20240105", AccessionNumber="ACC1",
          StudyID="S1", SeriesNumber="2", InstanceNumber="1", **common)  # fmt: skip
    store(api, study_uid=roe, PatientName="Roe^Richard", PatientID="P-2", StudyDate="20240210",
          StudyTime="231000", Modality="MR", AccessionNumber="ACC2")  # fmt: skip
    store(api, study_uid=smith, PatientName="Smith^Anna", PatientID="P-3", StudyDate="20231231",
          StudyTime="070000", AccessionNumber="ACC3")  # fmt: skip
    store(api, study_uid=smith, PatientName="Smith^Anna", PatientID="P-3", StudyDate="20231231",
          StudyTime="070000", AccessionNumber="ACC3", Modality="SR")  # fmt: skip
    return {"doe": doe, "roe": roe, "smith": smith, "doe_ct": doe_ct}


def test_all_studies_carry_the_default_and_computed_attributes(api, three_studies):
    results = found(api)
    assert uids(results) == {three_studies["doe"], three_studies["roe"], three_studies["smith"]}
    doe = next(r for r in results if value(r, STUDY_UID) == three_studies["doe"])
    assert doe[PATIENT_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert value(doe, "00100020") == "P-1"
    assert value(doe, STUDY_DATE) == "20240105"
    assert value(doe, "00080030") == "101500"
    assert value(doe, "00080050") == "ACC1"
    assert value(doe, "00200010") == "S1"
    assert doe["00080090"] == {"vr": "PN", "Value": [{"Alphabetic": "House^Gregory"}]}
    assert doe[MODALITIES] == {"vr": "CS", "Value": ["CT"]}
    assert doe["00201206"] == {"vr": "IS", "Value": [2]}  # NumberOfStudyRelatedSeries
    assert doe["00201208"] == {"vr": "IS", "Value": [3]}  # NumberOfStudyRelatedInstances
    assert doe["00081190"]["Value"] == [f"http://testserver/dicomweb/studies/{three_studies['doe']}"]
    assert doe["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}  # InstanceAvailability
    assert list(doe) == sorted(doe)
    smith = next(r for r in results if value(r, STUDY_UID) == three_studies["smith"])
    assert smith[MODALITIES]["Value"] == ["CT", "SR"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientName": "Doe^Jane"}, {"doe"}),
        ({"PatientName": "doe^jane"}, {"doe"}),  # PN: case-insensitive
        ({"00100010": "DOE*"}, {"doe"}),
        ({"PatientName": "*an*"}, {"doe", "smith"}),  # Doe^Jane, Smith^Anna; not Roe^Richard
        ({"PatientName": "R?e^*"}, {"roe"}),
        ({"PatientName": "Doe"}, set()),  # single value matching is on the whole name
        ({"PatientID": "P-2"}, {"roe"}),
        ({"PatientID": "p-2"}, set()),  # LO: case-sensitive
        ({"PatientID": "P-*"}, {"doe", "roe", "smith"}),
        ({"AccessionNumber": "ACC3"}, {"smith"}),
        ({"StudyID": "S1"}, {"doe"}),
        ({"ReferringPhysicianName": "house^*"}, {"doe"}),
        ({"StudyDate": "20240105"}, {"doe"}),
        ({"StudyDate": "20240101-20240131"}, {"doe"}),
        ({"StudyDate": "-20240105"}, {"doe", "smith"}),
        ({"StudyDate": "20240106-"}, {"roe"}),
        ({"StudyTime": "10"}, {"doe"}),  # the whole hour
        ({"StudyTime": "0700-1015"}, {"doe", "smith"}),  # 10:15 includes 10:15:00
        ({"StudyTime": "2300-"}, {"roe"}),
        ({"ModalitiesInStudy": "MR"}, {"roe"}),
        ({"ModalitiesInStudy": "SR,MR"}, {"roe", "smith"}),
        ({"ModalitiesInStudy": "MR\\SR"}, {"roe", "smith"}),
        ({"PatientName": "Smith*", "StudyDate": "20240101-"}, set()),  # keys combine with AND
        ({"PatientName": ""}, {"doe", "roe", "smith"}),  # universal matching
    ],
)
def test_study_matching_keys(api, three_studies, params, expected):
    assert uids(found(api, **params)) == {three_studies[name] for name in expected}


def test_uid_list_matching_takes_commas_and_backslashes(api, three_studies):
    listed = f"{three_studies['doe']},{three_studies['roe']}"
    assert uids(found(api, StudyInstanceUID=listed)) == {three_studies["doe"], three_studies["roe"]}
    listed = f"{three_studies['smith']}\\{three_studies['roe']}"
    assert uids(found(api, **{STUDY_UID: listed})) == {three_studies["smith"], three_studies["roe"]}
    assert found(api, StudyInstanceUID="1.2.3.4") == []


def test_a_matched_attribute_is_returned_even_when_not_a_default(api, three_studies):
    results = found(api, PatientName="Doe*", includefield="PatientAge,00081030")
    assert set(results[0]) >= {"00101010", "00081030", PATIENT_NAME}


def test_series_of_a_study_with_series_keys(api, three_studies):
    doe = three_studies["doe"]
    results = found(api, f"studies/{doe}/series")
    assert len(results) == 2
    first = next(r for r in results if value(r, SERIES_UID) == three_studies["doe_ct"])
    assert value(first, "00080060") == "CT"
    assert value(first, "00200011") == 1
    assert first["00201209"] == {"vr": "IS", "Value": [2]}  # NumberOfSeriesRelatedInstances
    assert first["00081190"]["Value"] == [
        f"http://testserver/dicomweb/studies/{doe}/series/{three_studies['doe_ct']}"
    ]
    assert PATIENT_NAME not in first  # scoped to a study: no study attributes by default
    assert len(found(api, f"studies/{doe}/series", SeriesNumber="2")) == 1
    assert found(api, f"studies/{doe}/series", Modality="MR") == []
    with_series_uid = found(api, f"studies/{doe}/series", SeriesInstanceUID=three_studies["doe_ct"])
    assert uids(with_series_uid, SERIES_UID) == {three_studies["doe_ct"]}


def test_all_series_take_study_keys_and_return_study_attributes(api, three_studies):
    results = found(api, "series", PatientName="Smith*", Modality="SR")
    assert len(results) == 1
    assert value(results[0], STUDY_UID) == three_studies["smith"]
    assert results[0][PATIENT_NAME]["Value"] == [{"Alphabetic": "Smith^Anna"}]
    assert len(found(api, "series", ModalitiesInStudy="SR")) == 2  # every series of the SR study


def test_instances_at_every_scope_with_instance_keys(api, three_studies):
    doe, ct = three_studies["doe"], three_studies["doe_ct"]
    in_series = found(api, f"studies/{doe}/series/{ct}/instances")
    assert len(in_series) == 2
    assert {value(r, "00200013") for r in in_series} == {1, 2}
    assert {value(r, "00080016") for r in in_series} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert value(in_series[0], "00280010") == 128  # Rows
    assert SERIES_UID in in_series[0] and "00080060" not in in_series[0]
    in_study = found(api, f"studies/{doe}/instances")
    assert len(in_study) == 3 and "00080060" in in_study[0]  # series attributes: not scoped to one
    assert len(found(api, f"studies/{doe}/instances", InstanceNumber="1")) == 2
    sop = value(in_series[0], SOP_UID)
    one = found(api, "instances", SOPInstanceUID=sop)
    assert uids(one, SOP_UID) == {sop} and value(one[0], PATIENT_NAME)  # all instances: study attributes too
    assert found(api, "instances", SOPClassUID="1.2.840.10008.5.1.4.1.1.4") == []
    url = in_series[0]["00081190"]["Value"][0]
    assert url.endswith(f"/studies/{doe}/series/{ct}/instances/{sop}")


def test_includefield_repeated_comma_separated_tags_keywords_and_all(api, three_studies):
    results = found(
        api, "studies", StudyInstanceUID=three_studies["doe"], includefield=["PatientAge", "00100040"]
    )
    assert "00101010" in results[0]
    everything = found(api, f"studies/{three_studies['doe']}/series", includefield="all")
    assert {"0008103E", "00180015", "00080070", PATIENT_NAME} <= set(everything[0])


def test_paging_is_stable_in_uid_order(api, three_studies):
    ordered = sorted(three_studies[name] for name in ("doe", "roe", "smith"))
    first = found(api, limit="2")
    second = found(api, limit="2", offset="2")
    assert [value(r, STUDY_UID) for r in first + second] == ordered
    assert found(api, offset="3") == []


def test_the_server_limit_cuts_results_short_with_a_warning(api, three_studies, monkeypatch):
    monkeypatch.setattr(qido, "DEFAULT_LIMIT", 2)
    response = get(api, "studies")
    assert len(response.json()) == 2
    assert "The number of results exceeded the maximum" in response["Warning"]
    assert "Warning" not in get(api, "studies", limit="2")  # the client asked for that many


def test_fuzzymatching_is_accepted_with_the_not_supported_warning(api, three_studies):
    response = get(api, "studies", PatientName="doe^jane", fuzzymatching="true")
    assert uids(response.json()) == {three_studies["doe"]}
    assert response["Warning"].startswith("299 ")
    assert "fuzzymatching parameter is not supported" in response["Warning"]
    assert "Warning" not in get(api, "studies", fuzzymatching="false")


def test_no_match_is_200_with_an_empty_list(api):
    response = get(api, "studies", PatientName="Nobody")
    assert response.status_code == 200
    assert response.json() == []
    assert get(api, f"studies/{generate_uid()}/series").json() == []


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"Smith": "x"}, "Smith"),
        ({"PatientBirthDate": "19700101"}, "PatientBirthDate"),  # an attribute, not a matching key
        ({"SOPInstanceUID": "1.2"}, "SOPInstanceUID"),  # an instance key at the study level
        ({"StudyDate": "2024-01-05"}, "StudyDate"),
        ({"StudyDate": "20241305"}, "StudyDate"),
        ({"StudyTime": "25"}, "StudyTime"),
        ({"SeriesNumber": "one"}, "SeriesNumber"),
        ({"limit": "-1"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"includefield": "NotAKeyword"}, "includefield"),
        ({"PatientName": "x" * 400}, "PatientName"),
    ],
)
def test_a_query_it_cannot_answer_is_a_400_naming_the_key_never_the_value(api, params, named):
    path = "series" if "SeriesNumber" in params else "studies"
    response = get(api, path, **params)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert set(response.json()) == {"detail"}
    assert named in detail
    for sent in params.values():
        if sent not in (named, "Smith"):
            assert sent not in detail


def test_a_key_given_twice_is_a_400(api):
    response = api.get("/dicomweb/studies?PatientID=a&00100020=b")
    assert response.status_code == 400
    assert "PatientID" in response.json()["detail"]


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("", DICOM_JSON),
        ("application/dicom+json", DICOM_JSON),
        ("application/json", "application/json"),
        ("*/*", DICOM_JSON),
        ("application/json;q=1, application/dicom+json;q=0.5", "application/json"),
        ("multipart/related; type=application/dicom, application/*;q=0.1", DICOM_JSON),
    ],
)
def test_accept_negotiation(api, accept, content_type):
    response = get(api, "studies", accept=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == content_type


@pytest.mark.parametrize("accept", ["application/dicom+xml", "text/html", "application/dicom+json;q=0"])
def test_an_accept_it_cannot_meet_is_a_406_with_a_detail(api, accept):
    response = get(api, "studies", accept=accept)
    assert response.status_code == 406
    assert set(response.json()) == {"detail"}


def test_a_user_sees_only_their_studies_and_counts_only_their_instances(api, other_api):
    shared = generate_uid()
    store(api, study_uid=shared, PatientName="Mine^A")
    store(other_api, study_uid=shared, PatientName="Theirs^B", Modality="MR")
    store(other_api, PatientName="Theirs^C")
    mine = found(api)
    assert uids(mine) == {shared}
    assert mine[0]["00201208"]["Value"] == [1]
    assert mine[0][MODALITIES]["Value"] == ["CT"]
    assert mine[0][PATIENT_NAME]["Value"] == [{"Alphabetic": "Mine^A"}]
    assert found(api, PatientName="Theirs*") == []
    assert found(api, "series", Modality="MR") == []


def test_staff_without_view_phi_see_originals_masked_and_cannot_match_their_values(api, staff_api):
    study = generate_uid()
    store(api, study_uid=study, PatientName="Secret^Patient", PatientID="SECRET-1", StudyDate="20240105")
    results = found(staff_api)
    assert uids(results) == {study}
    assert results[0][PATIENT_NAME] == {"vr": "PN"}
    assert results[0]["00100020"] == {"vr": "LO"}
    assert results[0][STUDY_DATE] == {"vr": "DA"}
    assert results[0][MODALITIES]["Value"] == ["CT"]  # not patient data
    # No oracle: the real values do not select the original.
    assert found(staff_api, PatientName="Secret*") == []
    assert found(staff_api, PatientID="SECRET-1") == []
    assert found(staff_api, StudyDate="20240101-20240131") == []
    assert uids(found(staff_api, StudyInstanceUID=study)) == {study}
    assert "Secret" not in str(found(staff_api, "instances", includefield="all"))


def test_staff_with_view_phi_see_and_match_everything(api, staff_user, staff_api):
    staff_user.user_permissions.add(Permission.objects.get(codename="view_phi"))
    study = generate_uid()
    store(api, study_uid=study, PatientName="Secret^Patient")
    assert value(found(staff_api, PatientName="secret*")[0], PATIENT_NAME) == {"Alphabetic": "Secret^Patient"}


def test_a_deidentified_copy_is_never_masked_and_its_study_shows_only_its_values(api, other_api, staff_api):
    original = search_instance(PatientName="Secret^Patient", PatientID="SECRET-1")
    response = api.post("/api/dicom/upload", data=original, content_type="application/dicom")
    assert response.status_code == 200
    copy = other_api.post(
        "/api/dicom/upload?anonymize=true&retain_uids=true", data=original, content_type="application/dicom"
    )
    assert copy.status_code == 200, copy.content
    study = DicomFile.objects.get(pk=copy.json()["file_id"]).study_instance_uid
    assert DicomFile.objects.filter(study_instance_uid=study).count() == 2  # the copy kept its UIDs
    # The other user sees only the copy: nothing of the original's.
    theirs = found(other_api, includefield="all")
    assert uids(theirs) == {study}
    assert "Secret" not in str(theirs) and "SECRET-1" not in str(theirs)
    assert found(other_api, PatientName="Secret*") == []
    # Staff without view_phi: the study's attributes come from the copy, shown in full.
    staff = found(staff_api, StudyInstanceUID=study)
    assert "Secret" not in str(staff)
    assert staff[0][PATIENT_NAME].get("Value") is not None
    copy_name = staff[0][PATIENT_NAME]["Value"][0]["Alphabetic"]
    assert uids(found(staff_api, PatientName=copy_name)) == {study}
    assert staff[0]["00201208"]["Value"] == [1]  # one SOP Instance UID, stored twice


def test_the_search_is_audited_with_the_uids_it_answered(api, three_studies):
    found(api, PatientName="Doe^Jane")
    row = AuditLog.objects.filter(action=AuditLog.Action.SEARCH).latest("id")
    assert row.success
    assert f"study:{three_studies['doe']}" in row.targets
    assert "Doe" not in str(row.targets) and "Doe" not in (row.reason or "")


def test_a_newer_upload_of_the_same_instance_is_one_instance(api):
    data = search_instance(PatientName="Twice^Stored")
    for _ in range(2):
        assert api.post("/api/dicom/upload", data=data, content_type="application/dicom").status_code == 200
    results = found(api, "instances", PatientName="Twice*")
    assert len(results) == 1
    assert found(api, PatientName="Twice*")[0]["00201208"]["Value"] == [1]


def test_index_only_values_stay_out_of_the_apis_metadata_object(api):
    response = api.post(
        "/api/dicom/upload",
        data=search_instance(ReferringPhysicianName="House^Gregory", StudyID="S-42"),
        content_type="application/dicom",
    )
    metadata = response.json()["metadata"]
    assert "referring_physician_name" not in metadata and "study_id" not in metadata
    assert not any(key.startswith("_") for key in metadata)
    row = DicomFile.objects.get(pk=response.json()["file_id"])
    assert (row.referring_physician_name, row.study_id) == ("House^Gregory", "S-42")
    assert "House" not in str(row.metadata)


def test_the_migration_fills_the_index_of_existing_rows_from_their_metadata(user):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("dicom.migrations.0004_search_index")
    row = DicomFile.objects.create(
        owner=user,
        metadata={
            "patient_name": "Old^Row",
            "study_date": "2020-02-29",
            "study_time": "07:30:00.25",
            "accession_number": "A-1",
            "series_number": 3,
            "instance_number": [4],
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
        },
    )
    DicomFile.objects.create(owner=user, metadata={"study_date": "not a date", "series_number": "x"})
    migration.fill_index(apps, None)
    row.refresh_from_db()
    assert row.patient_name == "Old^Row" and row.accession_number == "A-1"
    assert str(row.study_date) == "2020-02-29" and str(row.study_time) == "07:30:00.250000"
    assert (row.series_number, row.instance_number) == (3, 4)
    assert row.sop_class_uid == "1.2.840.10008.5.1.4.1.1.7"
    broken = DicomFile.objects.exclude(pk=row.pk).get()
    assert broken.study_date is None and broken.series_number is None


def test_a_queued_deidentification_is_found_by_its_own_values_and_shares_its_study(api, staff_api):
    from dicom.tests.jobs import run_worker

    original = store(api, PatientName="Queued^Original", StudyDate="20240105")
    response = api.post(
        f"/api/dicom/anonymize/{original.pk}", {"retain_uids": True, "retain_full_dates": True}, format="json"
    )
    assert response.status_code == 200, response.content
    run_worker()
    copy = DicomFile.objects.get(pk=response.json()["anonymized_file_id"])
    assert (
        copy.status == DicomFile.Status.COMPLETED and copy.study_instance_uid == original.study_instance_uid
    )
    assert copy.patient_name and copy.patient_name != "Queued^Original"  # the job saved the index columns
    assert copy.study_date is not None
    # Staff without view_phi find the study by the copy's (de-identified) name, and see it.
    results = found(staff_api, PatientName=copy.patient_name)
    assert uids(results) == {original.study_instance_uid}
    assert value(results[0], PATIENT_NAME) == {"Alphabetic": copy.patient_name}
    assert found(staff_api, PatientName="Queued*") == []


def test_head_answers_like_get_without_an_audit_row(api, three_studies):
    before = AuditLog.objects.filter(action=AuditLog.Action.SEARCH).count()
    response = api.head("/dicomweb/studies", HTTP_ACCEPT=DICOM_JSON)
    assert response.status_code == 200
    assert response["Content-Type"] == DICOM_JSON
    assert AuditLog.objects.filter(action=AuditLog.Action.SEARCH).count() == before


def test_files_derived_from_a_users_files_are_theirs_two_generations_down(api, user, other_user, other_api):
    def row(owner, source, study):
        return DicomFile.objects.create(
            owner=owner,
            source=source,
            status=DicomFile.Status.COMPLETED,
            storage_key=f"k/{generate_uid()}",
            study_instance_uid=study,
            series_instance_uid=generate_uid(),
            sop_instance_uid=generate_uid(),
        )

    first, second, third = generate_uid(), generate_uid(), generate_uid()
    original = row(user, None, first)
    child = row(other_user, original, second)
    row(other_user, child, third)
    row(other_user, None, generate_uid())
    assert uids(found(api)) == {first, second, third}
    assert len(found(other_api)) == 3  # their own three (child, grandchild, unrelated)
