"""Orthanc (Debian's) as a DIMSE peer of our node: C-STORE to DICOMSVC and DEID, C-FIND, C-ECHO.

Run by ``test_orthanc_dimse.py`` inside a network namespace of its own (``unshare -n``, loopback
only, as Orthanc listens on every interface). Starts two nodes (``manage.py dicom_scp``, each on its
own migrated SQLite database and data directory):

- ``node``: the default, loopback trusted; Orthanc's AE title registered as an application entity
  (its host and DICOM port, may store, query and retrieve, its own account);
- ``strict``: ``DICOM_SCP_TRUST_LOOPBACK=false``, the same registration;

and Orthanc whose ``DicomModalities`` name both nodes' AE titles, each once more with another
calling AE title (``LocalAet``) that neither node knows. Then drives Orthanc's REST API: upload two
studies to Orthanc, C-STORE the first to DICOMSVC and DEID as the registered AE and the second to
DICOMSVC as the unknown one (trusted: loopback), C-FIND at study and series level, C-ECHO, and the
unknown AE to ``strict`` (rejected). Prints one JSON object of what it saw; the test asserts on it.

The node also runs a ``db_worker`` and forwards what it de-identifies to Orthanc (a destination on
Orthanc's application entity, a "de-identified" rule): :func:`forwarded_to_orthanc` reads those
files back through Orthanc's REST API. Then Orthanc deletes the first study and takes it back from
DICOMSVC with C-MOVE to its own AE title (:func:`retrieved_by_orthanc_with_c_move`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dicom.tests.orthanc import Rest, free_port, running_orthanc  # noqa: E402
from dicom.tests.services.dicom_builders import two_series_study  # noqa: E402
from dimse.tests.conftest import Node, db_worker, dimse_node  # noqa: E402

ORTHANC_AET = "ORTHANCPEER"
UNKNOWN_AET = "STRANGER"
ACCOUNT = "orthanc-peer"
PATIENT_NAME = "PEER^DIMSE"
BIRTH_DATE = "19230405"


def register(node: Node, *, orthanc_port: int, forward: bool = False) -> None:
    """Orthanc's AE title as an application entity of ``node``, acting as its own account; with
    ``forward``, also a destination on it and a rule sending every de-identified file there."""
    node.shell(
        "from django.contrib.auth.models import User;"
        "from dimse.models import ApplicationEntity, Destination, ForwardingRule\n"
        f"entity = ApplicationEntity.objects.create(ae_title={ORTHANC_AET!r}, description='Orthanc peer',"
        f" host='127.0.0.1', port={orthanc_port}, account=User.objects.create_user({ACCOUNT!r}),"
        " may_store=True, may_query=True, may_retrieve=True)\n"
        f"if {forward!r}:\n"
        "    destination = Destination.objects.create(name='orthanc', kind='dimse', application_entity=entity)\n"
        "    ForwardingRule.objects.create(trigger='deidentified', destination=destination)\n"
        "print('null')"
    )


def modalities(node: Node, strict: Node) -> dict:
    """Orthanc's names for our AE titles; the ``unknown-`` ones call with an unregistered AE title."""
    known = {
        "svc": {"AET": "DICOMSVC", "Host": "127.0.0.1", "Port": node.port},
        "deid": {"AET": "DEID", "Host": "127.0.0.1", "Port": node.port},
        "strict": {"AET": "DICOMSVC", "Host": "127.0.0.1", "Port": strict.port},
    }
    unknown = {f"unknown-{name}": {**entry, "LocalAet": UNKNOWN_AET} for name, entry in known.items()}
    return known | unknown


def run(work: Path) -> dict:
    orthanc_port = free_port()
    with (
        dimse_node(work / "node") as node,
        dimse_node(work / "strict", DICOM_SCP_TRUST_LOOPBACK="false") as strict,
    ):
        register(node, orthanc_port=orthanc_port, forward=True)
        register(strict, orthanc_port=orthanc_port)
        with (
            db_worker(node),
            running_orthanc(
                work / "orthanc",
                DicomServerEnabled=True,
                DicomAet=ORTHANC_AET,
                DicomPort=orthanc_port,
                DicomModalities=modalities(node, strict),
                DicomScuTimeout=60,
            ) as orthanc,
        ):
            try:
                return drive(orthanc.rest, node, strict)
            except Exception:
                # What each side said (synthetic data only), for the test's failure message.
                sys.stderr.write(orthanc.log_tail())
                sys.stderr.write(node.log.read_text(errors="replace")[-4000:])
                raise


def drive(orthanc: Rest, node: Node, strict: Node) -> dict:
    report: dict = {}
    studies = {}
    for key in ("registered", "unknown"):
        patient = f"DIMSE-{generate_uid()[-8:]}"
        sent = {}
        for data in two_series_study(
            PatientID=patient, PatientName=PATIENT_NAME, PatientBirthDate=BIRTH_DATE
        ):
            instance = orthanc.json("POST", "/instances", data)["ID"]
            _, held = orthanc.call("GET", f"/instances/{instance}/file")
            header = pydicom.dcmread(BytesIO(held), stop_before_pixels=True)
            sent[str(header.SOPInstanceUID)] = hashlib.sha256(sent_dataset(held)).hexdigest()
        study = str(header.StudyInstanceUID)
        studies[key] = orthanc.json("POST", "/tools/lookup", study)[0]["ID"]
        report[key] = {"patient": patient, "study": study, "sent": sent}

    store = {"Resources": [studies["registered"]], "Synchronous": True}
    report["store_svc"] = orthanc.json("POST", "/modalities/svc/store", store)
    report["store_deid"] = orthanc.json("POST", "/modalities/deid/store", store)
    report["store_unknown_trusted"] = orthanc.json(
        "POST", "/modalities/unknown-svc/store", {"Resources": [studies["unknown"]], "Synchronous": True}
    )
    originals = (PATIENT_NAME, BIRTH_DATE, report["registered"]["patient"], report["unknown"]["patient"])
    report["stored"] = [summary(f, originals) for f in node.files()]

    patient, study = report["registered"]["patient"], report["registered"]["study"]
    report["find_studies"] = query(
        orthanc,
        "Study",
        {
            "PatientID": patient,
            "PatientName": "",
            "PatientBirthDate": "",
            "StudyInstanceUID": "",
            "ModalitiesInStudy": "",
            "NumberOfStudyRelatedSeries": "",
            "NumberOfStudyRelatedInstances": "",
        },
    )
    report["find_series"] = query(
        orthanc,
        "Series",
        {
            "StudyInstanceUID": study,
            "SeriesInstanceUID": "",
            "Modality": "",
            "NumberOfSeriesRelatedInstances": "",
        },
    )
    report["held"] = node.shell(
        "import json; from dicom.models import DicomFile;"
        "print(json.dumps(list(DicomFile.objects.filter(anonymized=False).values("
        "'study_instance_uid', 'series_instance_uid', 'sop_instance_uid', 'patient_id', 'modality',"
        " 'owner__username'))))"
    )
    report["forwarded"] = forwarded_to_orthanc(orthanc, node, originals)
    report["moved"] = retrieved_by_orthanc_with_c_move(
        orthanc, node, studies["registered"], report["registered"]
    )
    report["audit"] = node.audit()
    report["echo_svc"] = orthanc.call("POST", "/modalities/svc/echo", {})[0]
    report["echo_deid"] = orthanc.call("POST", "/modalities/deid/echo", {})[0]

    # The strict node knows Orthanc's AE title and no other.
    report["strict_echo_registered"] = orthanc.call("POST", "/modalities/strict/echo", {})[0]
    report["strict_echo_unknown"] = orthanc.call("POST", "/modalities/unknown-strict/echo", {})[0]
    status, body = orthanc.call(
        "POST", "/modalities/unknown-strict/store", {"Resources": [studies["unknown"]], "Synchronous": True}
    )
    report["strict_store_unknown"] = {"status": status, "answer": json.loads(body) if body else None}
    report["strict_files"] = len(strict.files())
    report["strict_log"] = [
        line for line in strict.log.read_text(errors="replace").splitlines() if "rejected" in line
    ]
    return report


def sent_dataset(held: bytes) -> bytes:
    """What Orthanc sends in a C-STORE of the file it holds: the dataset after the file meta, less a
    trailing Data Set Trailing Padding (FFFC,FFFC) (DCMTK leaves it out; CT_small ends with one)."""
    dataset = dataset_bytes(held)
    padding = pydicom.dcmread(BytesIO(held)).get(0xFFFCFFFC)
    if padding is not None:
        element = b"\xfc\xff\xfc\xffOB\x00\x00" + len(padding.value).to_bytes(4, "little") + padding.value
        assert dataset.endswith(element), "the trailing padding is not the last element"
        dataset = dataset[: -len(element)]
    return dataset


def dataset_bytes(data: bytes) -> bytes:
    """The bytes after the file meta group of a Part 10 file."""
    with BytesIO(data) as fp:
        pydicom.filereader.read_preamble(fp, False)
        pydicom.filereader._read_file_meta_info(fp)
        return data[fp.tell() :]


def summary(stored: dict, originals: tuple[str, ...]) -> dict:
    """A file the node holds (``Node.files``) without its bytes, and which of the original patient
    data (``originals``) are in them."""
    data = bytes.fromhex(stored.pop("data"))
    header = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    stored["dataset_sha256"] = hashlib.sha256(dataset_bytes(data)).hexdigest()
    stored["study"] = str(header.StudyInstanceUID)
    stored["patient_data_in_bytes"] = sorted(value for value in originals if value.encode() in data)
    return stored


def query(orthanc: Rest, level: str, keys: dict) -> list[dict]:
    """C-FIND through Orthanc to DICOMSVC: the answers, keyword to value."""
    found = orthanc.json("POST", "/modalities/svc/query", {"Level": level, "Query": keys})
    return orthanc.json("GET", f"/queries/{found['ID']}/answers?expand&simplify")


def forwarded_to_orthanc(orthanc: Rest, node: Node, originals: tuple[str, ...]) -> dict:
    """The de-identified files the node forwarded (its worker, by the rule), as Orthanc holds them:
    found by their SOP Instance UIDs; which of the original patient data Orthanc's REST API shows
    for them (their tags, their patient and study) or their bytes hold."""
    wanted = [f["sop"] for f in node.files() if f["anonymized"]]
    deadline = time.monotonic() + 90
    found: dict[str, str] = {}
    while len(found) < len(wanted) and time.monotonic() < deadline:
        for sop in wanted:
            if sop not in found:
                hits = orthanc.json("POST", "/tools/lookup", sop)
                if hits:
                    found[sop] = hits[0]["ID"]
        time.sleep(0.5)
    shown = []
    for instance in found.values():
        tags = orthanc.json("GET", f"/instances/{instance}/simplified-tags")
        patient = orthanc.json("GET", f"/instances/{instance}/patient")
        study = orthanc.json("GET", f"/instances/{instance}/study")
        _, data = orthanc.call("GET", f"/instances/{instance}/file")
        text = json.dumps([tags, patient, study])
        shown.append(
            {
                "sop": tags.get("SOPInstanceUID"),
                "patient_id": tags.get("PatientID"),
                "identity_removed": tags.get("PatientIdentityRemoved"),
                "patient_data_in_rest": sorted(value for value in originals if value in text),
                "patient_data_in_bytes": sorted(value for value in originals if value.encode() in data),
            }
        )
    transfers = node.shell(
        "import json; from dimse.models import Transfer;"
        "print(json.dumps(list(Transfer.objects.order_by('pk').values('status', 'detail', 'trigger'))))"
    )
    return {"wanted": wanted, "found": sorted(found), "shown": shown, "transfers": transfers}


def retrieved_by_orthanc_with_c_move(orthanc: Rest, node: Node, study_id: str, sent: dict) -> dict:
    """Orthanc deletes the study it sent to DICOMSVC, then takes it back from there with C-MOVE to
    its own AE title (registered with its host and port): what it holds afterwards."""
    orthanc.call("DELETE", f"/studies/{study_id}")
    gone = orthanc.json("POST", "/tools/lookup", sent["study"])
    status, body = orthanc.call(
        "POST",
        "/modalities/svc/move",
        {
            "Level": "Study",
            "Resources": [{"StudyInstanceUID": sent["study"]}],
            "TargetAet": ORTHANC_AET,
            "Synchronous": True,
        },
    )
    held = {}
    for sop in sent["sent"]:
        hits = orthanc.json("POST", "/tools/lookup", sop)
        if hits:
            _, data = orthanc.call("GET", f"/instances/{hits[0]['ID']}/file")
            held[sop] = hashlib.sha256(sent_dataset(data)).hexdigest()
    return {
        "gone_before": gone == [],
        "status": status,
        "answer": body.decode(errors="replace")[:500],
        "held": held,
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="orthanc-dimse-") as tmp:
        print(json.dumps(run(Path(tmp))))
