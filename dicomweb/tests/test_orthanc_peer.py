"""Orthanc as a DICOMweb client of the service: STOW (chunked), QIDO, WADO-RS retrieve and metadata.

Orthanc listens on every interface, so it runs with the service inside a network namespace of its
own with only loopback (``unshare -n``; root, or sudo). ``orthanc_peer.py`` drives it and reports.
"""

from pathlib import Path

import pytest

from dicom.tests.orthanc import DICOMWEB_PLUGIN, ORTHANC, report_of

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def report():
    return report_of(HERE / "orthanc_peer.py", needs=(ORTHANC, DICOMWEB_PLUGIN))


def _uids(items, tag: str) -> list[str]:
    return sorted(item[tag]["Value"][0] for item in items)


def test_orthanc_stores_a_study_in_the_service_with_stow(report):
    assert report["stored_sops"] == report["sops"]
    assert set(report["stored_sha_match"].values()) == {True}


def test_orthanc_finds_the_study_and_its_series_with_qido(report):
    # Orthanc's answer to its own client is in its format: each tag's first value, as text.
    assert [item["0020000D"]["Value"] for item in report["qido_studies"]] == [report["study"]]
    study = report["qido_studies"][0]
    assert study["00100010"]["Value"] == "PEER^ORTHANC"
    assert study["00080061"]["Value"] in ("CT", "MR")  # ModalitiesInStudy (its first value)
    assert study["00081190"]["Value"].endswith(f"/dicomweb/studies/{report['study']}")
    # Orthanc's format leaves out numbers; the service's own answer, through Orthanc's GET, has them.
    (raw,) = report["qido_studies_raw"]
    assert raw["00201208"] == {"vr": "IS", "Value": [3]}  # NumberOfStudyRelatedInstances
    assert raw["00201206"] == {"vr": "IS", "Value": [2]}  # NumberOfStudyRelatedSeries
    assert sorted(raw["00080061"]["Value"]) == ["CT", "MR"]
    assert len(report["qido_series"]) == 2


def test_orthanc_retrieves_what_it_stored_byte_for_byte_but_the_zeroed_preamble(report):
    assert report["retrieve"]["ReceivedInstancesCount"] == "3"
    assert report["retrieved_sops"] == report["sops"]
    assert report["retrieved_equal_stored"]


def test_orthanc_reads_the_studys_metadata(report):
    assert _uids(report["metadata"], "00080018") == report["sops"]
    assert all(
        item["7FE00010"].get("BulkDataURI", "").startswith("http://127.0.0.1:") for item in report["metadata"]
    )
