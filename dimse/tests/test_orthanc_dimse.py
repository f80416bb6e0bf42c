"""Orthanc as a DIMSE peer of ``manage.py dicom_scp``: C-STORE to DICOMSVC and DEID, C-FIND, C-ECHO,
an unknown calling AE title refused once loopback is not trusted, the de-identified files forwarded
to Orthanc (no patient data in its REST API), and a study Orthanc takes back with C-MOVE.

Orthanc listens on every interface, so it runs with two nodes inside a network namespace of its own
with only loopback (``unshare -n``; root, or sudo). ``orthanc_dimse.py`` drives it and reports.
"""

from pathlib import Path

import pytest

from dicom.tests.orthanc import report_of

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def report():
    return report_of(HERE / "orthanc_dimse.py")


def _stored(report, *, owner: str, anonymized: bool) -> list[dict]:
    return [f for f in report["stored"] if f["owner"] == owner and f["anonymized"] == anonymized]


def test_orthanc_stores_originals_in_dicomsvc_as_sent_but_the_zeroed_preamble(report):
    assert report["store_svc"]["InstancesCount"] == 3
    assert report["store_svc"]["FailedInstancesCount"] == 0
    originals = _stored(report, owner="orthanc-peer", anonymized=False)
    sent = report["registered"]["sent"]
    assert sorted(f["sop"] for f in originals) == sorted(sent)
    for stored in originals:
        assert stored["sha256"] == stored["actual"]
        assert stored["preamble"] == "00" * 128
        assert stored["ts"] == "1.2.840.10008.1.2.1"
        # The file meta is the node's (from the C-STORE request); the dataset is what Orthanc sent.
        assert stored["dataset_sha256"] == sent[stored["sop"]]


def test_orthanc_stores_de_identified_copies_through_deid(report):
    assert report["store_deid"]["InstancesCount"] == 3
    assert report["store_deid"]["FailedInstancesCount"] == 0
    copies = _stored(report, owner="orthanc-peer", anonymized=True)
    assert len(copies) == 3
    sent = report["registered"]["sent"]
    for copy in copies:
        assert copy["sha256"] == copy["actual"] and copy["preamble"] == "00" * 128
        assert copy["sop"] not in sent and copy["study"] != report["registered"]["study"]
        # Neither patient's name, ID nor birth date anywhere in the stored bytes.
        assert copy["patient_data_in_bytes"] == []
    # The originals do hold them: the check above can see them.
    assert all(f["patient_data_in_bytes"] for f in _stored(report, owner="orthanc-peer", anonymized=False))


def test_an_unregistered_calling_ae_on_loopback_is_trusted_by_default(report):
    assert report["store_unknown_trusted"]["InstancesCount"] == 3
    assert report["store_unknown_trusted"]["FailedInstancesCount"] == 0
    trusted = _stored(report, owner="dicom-system", anonymized=False)
    assert sorted(f["sop"] for f in trusted) == sorted(report["unknown"]["sent"])
    assert all(f["dataset_sha256"] == report["unknown"]["sent"][f["sop"]] for f in trusted)
    assert len(report["stored"]) == 9


def test_each_store_is_audited_with_the_calling_and_called_ae_titles(report):
    uploads = [row for row in report["audit"] if row["action"] == "upload"]
    assert all(row["success"] for row in uploads)
    assert sorted((row["reason"], row["username"]) for row in uploads) == sorted(
        [("DIMSE C-STORE ORTHANCPEER -> DICOMSVC", "orthanc-peer")] * 3
        + [("DIMSE C-STORE ORTHANCPEER -> DEID", "orthanc-peer")] * 3
        + [("DIMSE C-STORE STRANGER -> DICOMSVC", "dicom-system")] * 3
    )


def test_orthanc_finds_the_study_and_its_series_as_our_database_holds_them(report):
    rows = [r for r in report["held"] if r["patient_id"] == report["registered"]["patient"]]
    assert {r["owner__username"] for r in rows} == {"orthanc-peer"}
    (study,) = report["find_studies"]
    assert study["StudyInstanceUID"] == report["registered"]["study"] == rows[0]["study_instance_uid"]
    assert study["PatientID"] == report["registered"]["patient"]
    assert study["PatientName"] == "PEER^DIMSE" and study["PatientBirthDate"] == "19230405"
    assert sorted(study["ModalitiesInStudy"].split("\\")) == sorted({r["modality"] for r in rows})
    assert int(study["NumberOfStudyRelatedInstances"]) == len(rows) == 3
    assert int(study["NumberOfStudyRelatedSeries"]) == len({r["series_instance_uid"] for r in rows}) == 2
    assert study["QueryRetrieveLevel"] == "STUDY" and study["RetrieveAETitle"] == "DICOMSVC"

    series = {answer["SeriesInstanceUID"]: answer for answer in report["find_series"]}
    expected = {}
    for row in rows:
        expected.setdefault(row["series_instance_uid"], []).append(row["modality"])
    assert set(series) == set(expected)
    for uid, modalities in expected.items():
        assert series[uid]["Modality"] == modalities[0]
        assert int(series[uid]["NumberOfSeriesRelatedInstances"]) == len(modalities)
        assert series[uid]["QueryRetrieveLevel"] == "SERIES"


def test_orthanc_echoes_both_ae_titles(report):
    assert report["echo_svc"] == report["echo_deid"] == 200


def test_an_unknown_calling_ae_is_rejected_without_loopback_trust_and_nothing_is_stored(report):
    # The same node answers Orthanc's registered AE title.
    assert report["strict_echo_registered"] == 200
    assert report["strict_echo_unknown"] != 200
    assert report["strict_store_unknown"]["status"] != 200
    assert report["strict_files"] == 0
    assert len(report["strict_log"]) == 2
    assert all("calling AE 'STRANGER') rejected" in line for line in report["strict_log"])


def test_orthanc_receives_the_forwarded_de_identified_files_and_shows_no_patient_data(report):
    forwarded = report["forwarded"]
    assert len(forwarded["wanted"]) == 3 and forwarded["found"] == sorted(forwarded["wanted"])
    assert [t["status"] for t in forwarded["transfers"]] == ["sent"] * 3
    assert {t["trigger"] for t in forwarded["transfers"]} == {"deidentified"}
    for shown in forwarded["shown"]:
        assert shown["patient_data_in_rest"] == [] and shown["patient_data_in_bytes"] == []
        assert shown["patient_id"] and shown["patient_id"] != report["registered"]["patient"]
        assert shown["identity_removed"] == "YES"
    jobs = [row for row in report["audit"] if row["action"] == "job"]
    assert len(jobs) == 3 and all(row["success"] for row in jobs)
    assert all(
        row["reason"].startswith(f"sent to destination orthanc (C-STORE {'ORTHANCPEER'}") for row in jobs
    )


def test_orthanc_takes_a_study_back_with_c_move_as_we_hold_it(report):
    moved = report["moved"]
    assert moved["gone_before"], "Orthanc still had the study before the C-MOVE"
    assert moved["status"] == 200, moved["answer"]
    # Every instance is back, its dataset what Orthanc first sent (the node stored it as received).
    assert moved["held"] == report["registered"]["sent"]
    (row,) = [r for r in report["audit"] if r["action"] == "download"]
    assert row["success"] and row["username"] == "orthanc-peer"
    assert row["reason"].startswith("DIMSE C-MOVE ORTHANCPEER -> DICOMSVC to ORTHANCPEER: 0x0000 3 completed")
