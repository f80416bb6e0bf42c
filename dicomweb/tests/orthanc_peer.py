"""Orthanc (Debian's, with its DICOMweb plugin) using this service as its remote DICOMweb server.

Run by ``test_orthanc_peer.py`` inside a network namespace of its own (``unshare -n``, loopback only,
as Orthanc listens on every interface): starts this service as ``make run`` does and Orthanc
configured with it as the DICOMweb server ``svc`` (the service's token in its headers), then drives
Orthanc's REST API: store three instances in Orthanc, STOW them to the service (chunked, Orthanc's
default), QIDO through Orthanc, delete them from Orthanc and retrieve them back with WADO-RS, and
read a study's metadata through Orthanc's ``get``. Prints one JSON object of what it saw; the test
asserts on it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dicom.tests.conftest import embedded_service  # noqa: E402
from dicom.tests.orthanc import DICOMWEB_PLUGIN, Rest, running_orthanc  # noqa: E402
from dicom.tests.services.dicom_builders import two_series_study  # noqa: E402


def zeroed(data: bytes) -> bytes:
    """The bytes as the service stores them: the 128-byte preamble zeroed."""
    return bytes(128) + data[128:]


def run(work: Path) -> dict:
    with embedded_service(work / "service") as service:
        dicomweb = {
            "Enable": True,
            "Servers": {
                "svc": {
                    "Url": f"http://127.0.0.1:{service.port}/dicomweb/",
                    "HttpHeaders": {"Authorization": f"Token {service.token}"},
                }
            },
        }
        with running_orthanc(work / "orthanc", Plugins=[DICOMWEB_PLUGIN], DicomWeb=dicomweb) as orthanc:
            try:
                return drive(orthanc.rest, Rest(service.port, {"Authorization": f"Token {service.token}"}))
            except Exception:
                # What each side said (synthetic data only), for the test's failure message.
                sys.stderr.write(orthanc.log_tail())
                sys.stderr.write(service.log.read_text(errors="replace")[-4000:])
                raise


def drive(orthanc: Rest, ours: Rest) -> dict:
    patient = f"PEER-{generate_uid()[-8:]}"
    files = two_series_study(PatientID=patient, PatientName="PEER^ORTHANC")
    metas = [dcmread(BytesIO(data), stop_before_pixels=True) for data in files]
    study = metas[0].StudyInstanceUID
    by_sop = {
        m.SOPInstanceUID: hashlib.sha256(zeroed(data)).hexdigest()
        for m, data in zip(metas, files, strict=True)
    }
    for data in files:
        orthanc.json("POST", "/instances", data)
    orthanc_study = orthanc.json("POST", "/tools/lookup", study)[0]["ID"]
    report: dict = {"study": study, "sops": sorted(by_sop)}

    # STOW-RS from Orthanc to the service (Orthanc sends it chunked by default).
    report["stow"] = orthanc.json("POST", "/dicom-web/servers/svc/stow", {"Resources": [orthanc_study]})
    report.update(_stored(ours, study, by_sop))

    # QIDO-RS through Orthanc.
    report["qido_studies"] = orthanc.json(
        "POST", "/dicom-web/servers/svc/qido", {"Uri": "/studies", "Arguments": {"PatientID": patient}}
    )
    # The same search through Orthanc's generic GET: the service's DICOM JSON as it answered it.
    report["qido_studies_raw"] = orthanc.json(
        "POST",
        "/dicom-web/servers/svc/get",
        {"Uri": "/studies", "Arguments": {"PatientID": patient, "includefield": "all"}},
    )
    report["qido_series"] = orthanc.json(
        "POST", "/dicom-web/servers/svc/qido", {"Uri": f"/studies/{study}/series"}
    )

    # WADO-RS: Orthanc forgets the study, then retrieves it from the service.
    orthanc.json("DELETE", f"/studies/{orthanc_study}")
    report["retrieve"] = orthanc.json(
        "POST", "/dicom-web/servers/svc/retrieve", {"Resources": [{"Study": study}]}
    )
    retrieved = {}
    for instance_id in orthanc.json("GET", "/instances"):
        _, data = orthanc.call("GET", f"/instances/{instance_id}/file")
        sop = dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID
        retrieved[sop] = hashlib.sha256(data).hexdigest()
    report["retrieved_equal_stored"] = retrieved == by_sop
    report["retrieved_sops"] = sorted(retrieved)

    # Metadata through Orthanc's generic GET.
    report["metadata"] = orthanc.json(
        "POST", "/dicom-web/servers/svc/get", {"Uri": f"/studies/{study}/metadata"}
    )
    return report


def _stored(ours: Rest, study: str, by_sop: dict[str, str]) -> dict:
    """What the service holds of the study: its instances (QIDO) and whether each retrieved file
    (WADO-RS, as stored) has the SHA-256 of what Orthanc sent, the preamble zeroed."""
    status, body = ours.call(
        "GET", f"/dicomweb/studies/{study}/instances", headers={"Accept": "application/json"}
    )
    found = json.loads(body) if status == 200 else []
    matches = {}
    for item in found:
        sop, series = item["00080018"]["Value"][0], item["0020000E"]["Value"][0]
        status, data = ours.call(
            "GET",
            f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        hashes = {hashlib.sha256(part).hexdigest() for part in _parts(data)} if status == 200 else set()
        matches[sop] = hashes == {by_sop.get(sop)}
    return {"stored_sops": sorted(matches), "stored_sha_match": matches}


def _parts(body: bytes) -> list[bytes]:
    boundary = body.split(b"\r\n", 1)[0]
    parts = []
    for chunk in body.split(boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, content = chunk.partition(b"\r\n\r\n")
        parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    return parts


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="orthanc-peer-") as tmp:
        print(json.dumps(run(Path(tmp))))
