"""The checks of Orthanc's own DICOMweb test suite (orthanc-tests, Plugins/DicomWeb/Run.py) that apply
to this service, written here for its files and its API (no code or test image of that suite).

Not ported: WADO-URI (``/wado?requestType=WADO``; the service speaks WADO-RS only), Orthanc's
``/dicom-web/servers`` client API (``test_orthanc_peer.py`` drives Orthanc's client against this
service instead) and ``application/dicom+xml`` (the service answers JSON; XML is a 406).
"""

import re

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.uid import generate_uid

from dicom.models import DicomFile
from dicom.tests.services.dicom_builders import fresh_instance, part10_bytes
from dicomweb.tests.test_stow import body, failed, referenced, stow
from dicomweb.tests.test_wado import _parts

pytestmark = pytest.mark.django_db

JSON = "application/dicom+json"


def _raw_upload(api, payload: bytes) -> DicomFile:
    response = api.post("/api/dicom/upload", data=payload, content_type="application/dicom")
    assert response.status_code == 200, response.content
    return DicomFile.objects.get(id=response.json()["file_id"])


def test_storing_the_same_instance_twice_keeps_one_and_answers_its_urls(api):
    ds = fresh_instance("CT_small.dcm")
    payload = part10_bytes(ds)
    first = stow(api, body(payload))
    again = stow(api, body(payload))
    assert (first.status_code, again.status_code) == (200, 200)
    assert DicomFile.objects.filter(sop_instance_uid=ds.SOPInstanceUID).count() == 1
    assert failed(again) == [] and len(referenced(again)) == 1
    study_url = again.json()["00081190"]["Value"][0]
    assert study_url.endswith(f"/dicomweb/studies/{ds.StudyInstanceUID}")
    instance_url = referenced(again)[0]["00081190"]["Value"][0]
    assert instance_url.endswith(f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
    # The study's Retrieve URL answers one part, the stored file (its length, the file's).
    retrieved = api.get(
        study_url.removeprefix("http://testserver"), HTTP_ACCEPT='multipart/related; type="application/dicom"'
    )
    [(_, part)] = _parts(retrieved)
    assert len(part) == len(payload)


def test_limit_and_offset_page_through_every_study(api):
    studies = {
        _raw_upload(api, part10_bytes(fresh_instance(name))).study_instance_uid
        for name in ("CT_small.dcm", "MR_small.dcm")
    }
    everything = api.get("/dicomweb/studies", HTTP_ACCEPT=JSON).json()
    assert len(everything) == 2
    pages = [
        api.get(f"/dicomweb/studies?limit=1&offset={offset}", HTTP_ACCEPT=JSON).json() for offset in (0, 1)
    ]
    assert [len(page) for page in pages] == [1, 1]
    assert {page[0]["0020000D"]["Value"][0] for page in pages} == studies


def test_an_empty_value_is_the_vr_alone_in_metadata_and_in_search_results(api):
    ds = fresh_instance("CT_small.dcm")
    ds.AccessionNumber = ""
    f = _raw_upload(api, part10_bytes(ds))
    [instance] = api.get(f"/dicomweb/studies/{f.study_instance_uid}/metadata", HTTP_ACCEPT=JSON).json()
    assert instance["00080050"] == {"vr": "SH"}
    [study] = api.get(f"/dicomweb/studies?StudyInstanceUID={f.study_instance_uid}", HTTP_ACCEPT=JSON).json()
    assert study["00080050"] == {"vr": "SH"}


def test_metadata_is_the_same_at_every_level_and_unknown_uids_are_404_at_each(api):
    f = _raw_upload(api, part10_bytes(fresh_instance("CT_small.dcm")))
    study, series, sop = f.study_instance_uid, f.series_instance_uid, f.sop_instance_uid
    instance_url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata"
    assert api.get(instance_url, HTTP_ACCEPT="application/nope").status_code == 406
    answers = [
        api.get(url, HTTP_ACCEPT=JSON).json()
        for url in (
            instance_url,
            f"/dicomweb/studies/{study}/series/{series}/metadata",
            f"/dicomweb/studies/{study}/metadata",
        )
    ]
    assert answers[0] == answers[1] == answers[2] and len(answers[0]) == 1
    for url in (
        f"/dicomweb/studies/nope/series/{series}/instances/{sop}/metadata",
        f"/dicomweb/studies/{study}/series/nope/instances/{sop}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/nope/metadata",
        f"/dicomweb/studies/nope/series/{series}/metadata",
        f"/dicomweb/studies/{study}/series/nope/metadata",
        "/dicomweb/studies/nope/metadata",
    ):
        response = api.get(url, HTTP_ACCEPT=JSON)
        assert response.status_code == 404, url
        assert set(response.json()) == {"detail"}


def test_integer_strings_are_json_numbers_in_metadata_and_counts(api):
    ds = fresh_instance("MR_small.dcm")
    ds.EchoTrainLength = "10"
    f = _raw_upload(api, part10_bytes(ds))
    [instance] = api.get(f"/dicomweb/studies/{f.study_instance_uid}/metadata", HTTP_ACCEPT=JSON).json()
    assert instance["00180091"] == {"vr": "IS", "Value": [10]}
    [study] = api.get(f"/dicomweb/studies?StudyInstanceUID={f.study_instance_uid}", HTTP_ACCEPT=JSON).json()
    assert study["00201208"] == {"vr": "IS", "Value": [1]}


def test_a_person_name_keeps_its_ideographic_group_in_metadata_and_search(api):
    [path] = get_charset_files("chrX1.dcm")  # Wang^XiaoDong=王^小東, ISO_IR 192
    ds = dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        generate_uid(),
        generate_uid(),
        generate_uid(),
    )
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    f = _raw_upload(api, part10_bytes(ds))
    expected = {"vr": "PN", "Value": [{"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}]}
    [instance] = api.get(f"/dicomweb/studies/{f.study_instance_uid}/metadata", HTTP_ACCEPT=JSON).json()
    assert instance["00100010"] == expected
    [study] = api.get(f"/dicomweb/studies?StudyInstanceUID={f.study_instance_uid}", HTTP_ACCEPT=JSON).json()
    assert study["00100010"] == expected


def test_frames_of_a_fragmented_instance_answer_an_unquoted_octet_stream_accept(api):
    ds = fresh_instance("JPEG2000.dcm")  # encapsulated: the frame decoded for an octet-stream
    f = _raw_upload(api, part10_bytes(ds))
    [found] = api.get("/dicomweb/instances", HTTP_ACCEPT=JSON).json()
    url = found["00081190"]["Value"][0].removeprefix("http://testserver")
    assert re.search(rf"/instances/{re.escape(f.sop_instance_uid)}$", url)
    response = api.get(f"{url}/frames/1", HTTP_ACCEPT="multipart/related; type=application/octet-stream")
    assert response.status_code == 200, response.content
    [(content_type, frame)] = _parts(response)
    assert content_type.startswith("application/octet-stream")
    assert len(frame) == ds.Rows * ds.Columns * ds.SamplesPerPixel * (ds.BitsAllocated // 8)
