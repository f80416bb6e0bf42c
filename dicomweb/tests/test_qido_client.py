"""QIDO-RS with a client no one here wrote (``dicomweb-client``) against the service as ``make run`` starts it.

Files are stored through the REST API (``/api/dicom/upload``, raw ``application/dicom`` body).
The server lives for the module: each test makes its own studies (fresh UIDs, its own patient
names) and looks only for those.
"""

import uuid

import pytest
import requests
from pydicom.uid import generate_uid

from dicom.tests.services.dicom_builders import search_instance

pytestmark = pytest.mark.slow

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def store(server, token: str | None = None, **attributes) -> None:
    response = requests.post(
        f"http://127.0.0.1:{server.port}/api/dicom/upload",
        data=search_instance(**attributes),
        headers={"Authorization": f"Token {token or server.token}", "Content-Type": "application/dicom"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def first(result: dict, tag: str):
    return result[tag]["Value"][0]


@pytest.fixture
def a_patient(dicomweb_server):
    """One patient (a unique name) with two studies: CT (two series, three instances) and MR."""
    name = f"Client{uuid.uuid4().hex[:8]}^Test"
    ct, mr, series = generate_uid(), generate_uid(), generate_uid()
    for number in (1, 2):
        store(dicomweb_server, study_uid=ct, series_uid=series, PatientName=name, StudyDate="20240105",
              SeriesNumber="1", InstanceNumber=str(number))  # fmt: skip
    store(dicomweb_server, study_uid=ct, PatientName=name, StudyDate="20240105", SeriesNumber="2")
    store(dicomweb_server, study_uid=mr, PatientName=name, StudyDate="20240301", Modality="MR")
    return {"name": name, "ct": ct, "mr": mr, "series": series}


def test_search_for_studies_with_filters_fields_and_paging(dicomweb_server, a_patient):
    client = dicomweb_server.client()
    prefix = a_patient["name"].split("^")[0].lower() + "*"
    studies = client.search_for_studies(
        search_filters={"PatientName": prefix}, fields=["PatientAge", "00081030"]
    )
    assert {first(s, STUDY_UID) for s in studies} == {a_patient["ct"], a_patient["mr"]}
    ct = next(s for s in studies if first(s, STUDY_UID) == a_patient["ct"])
    assert first(ct, "00100010") == {"Alphabetic": a_patient["name"]}
    assert first(ct, "00201208") == 3 and first(ct, "00201206") == 2
    assert ct["00080061"]["Value"] == ["CT"]
    assert "00101010" in ct and "00081030" in ct
    # dicomweb-client sends a Host header of its own, without the port (web.py: headers["Host"] =
    # self.host): the service root is built from the Host the client sent.
    assert first(ct, "00081190") == f"http://127.0.0.1/dicomweb/studies/{a_patient['ct']}"
    in_january = client.search_for_studies(
        search_filters={"PatientName": prefix, "StudyDate": "20240101-20240131"}
    )
    assert [first(s, STUDY_UID) for s in in_january] == [a_patient["ct"]]
    by_modality = client.search_for_studies(search_filters={"PatientName": prefix, "ModalitiesInStudy": "MR"})
    assert [first(s, STUDY_UID) for s in by_modality] == [a_patient["mr"]]
    page_one = client.search_for_studies(search_filters={"PatientName": prefix}, limit=1)
    page_two = client.search_for_studies(search_filters={"PatientName": prefix}, limit=1, offset=1)
    assert len(page_one) == len(page_two) == 1
    assert {first(page_one[0], STUDY_UID), first(page_two[0], STUDY_UID)} == {
        a_patient["ct"],
        a_patient["mr"],
    }
    fuzzy = client.search_for_studies(
        search_filters={"PatientName": a_patient["name"].upper()}, fuzzymatching=True
    )
    assert len(fuzzy) == 2
    assert client.search_for_studies(search_filters={"PatientName": "Nobody^" + uuid.uuid4().hex}) == []


def test_search_for_series_in_a_study_and_everywhere(dicomweb_server, a_patient):
    client = dicomweb_server.client()
    series = client.search_for_series(study_instance_uid=a_patient["ct"])
    assert len(series) == 2
    ours = next(s for s in series if first(s, SERIES_UID) == a_patient["series"])
    assert first(ours, "00201209") == 2 and first(ours, "00200011") == 1 and first(ours, "00080060") == "CT"
    numbered = client.search_for_series(
        study_instance_uid=a_patient["ct"], search_filters={"SeriesNumber": 2}
    )
    assert len(numbered) == 1 and first(numbered[0], SERIES_UID) != a_patient["series"]
    everywhere = client.search_for_series(
        search_filters={"PatientName": a_patient["name"], "Modality": "MR"}, fields=["SeriesDescription"]
    )
    assert len(everywhere) == 1
    assert first(everywhere[0], STUDY_UID) == a_patient["mr"]
    assert first(everywhere[0], "00100010") == {"Alphabetic": a_patient["name"]}  # study attributes too
    paged = client.search_for_series(study_instance_uid=a_patient["ct"], limit=1, offset=1)
    assert len(paged) == 1


def test_search_for_instances_at_every_scope(dicomweb_server, a_patient):
    client = dicomweb_server.client()
    in_series = client.search_for_instances(
        study_instance_uid=a_patient["ct"], series_instance_uid=a_patient["series"], fields=["all"]
    )
    assert sorted(first(i, "00200013") for i in in_series) == [1, 2]
    assert all(first(i, "00280010") == 128 for i in in_series)
    numbered = client.search_for_instances(
        study_instance_uid=a_patient["ct"],
        series_instance_uid=a_patient["series"],
        search_filters={"InstanceNumber": 2},
    )
    assert len(numbered) == 1
    in_study = client.search_for_instances(study_instance_uid=a_patient["ct"], limit=2)
    assert len(in_study) == 2
    rest = client.search_for_instances(study_instance_uid=a_patient["ct"], limit=2, offset=2)
    assert len(rest) == 1
    assert {first(i, SOP_UID) for i in in_study + rest} >= {first(i, SOP_UID) for i in in_series}
    sop = first(in_series[0], SOP_UID)
    everywhere = client.search_for_instances(
        search_filters={"SOPInstanceUID": sop, "PatientName": a_patient["name"]}
    )
    assert [first(i, SOP_UID) for i in everywhere] == [sop]
    url = first(everywhere[0], "00081190")
    assert (
        url
        == f"http://127.0.0.1/dicomweb/studies/{a_patient['ct']}/series/{a_patient['series']}/instances/{sop}"
    )


def test_another_user_finds_nothing_of_it_and_staff_without_phi_see_it_masked(dicomweb_server, a_patient):
    other = dicomweb_server.client(dicomweb_server.other_token)
    assert other.search_for_studies(search_filters={"StudyInstanceUID": a_patient["ct"]}) == []
    assert other.search_for_series(study_instance_uid=a_patient["ct"]) == []
    assert other.search_for_instances(search_filters={"PatientName": a_patient["name"]}) == []
    own_name = f"Other{uuid.uuid4().hex[:8]}^User"
    store(dicomweb_server, dicomweb_server.other_token, PatientName=own_name)
    found = other.search_for_studies(search_filters={"PatientName": own_name})
    assert len(found) == 1 and first(found[0], "00201208") == 1
    staff = dicomweb_server.client(dicomweb_server.staff_token)
    masked = staff.search_for_studies(search_filters={"StudyInstanceUID": a_patient["ct"]})
    assert len(masked) == 1
    assert "Value" not in masked[0]["00100010"]
    assert a_patient["name"] not in str(masked)
    assert staff.search_for_studies(search_filters={"PatientName": a_patient["name"]}) == []
