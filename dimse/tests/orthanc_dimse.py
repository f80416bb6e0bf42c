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

Still to come here (others are building them): :func:`forwarded_to_orthanc` and
:func:`retrieved_by_orthanc_with_c_move`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dicom.tests.orthanc import Rest, free_port, running_orthanc  # noqa: E402
from dicom.tests.services.dicom_builders import fresh_instance, part10_bytes  # noqa: E402
from dimse.tests.conftest import Node, dimse_node  # noqa: E402

ORTHANC_AET = "ORTHANCPEER"
UNKNOWN_AET = "STRANGER"
ACCOUNT = "orthanc-peer"
PATIENT_NAME = "PEER^DIMSE"
BIRTH_DATE = "19230405"


def study_files(patient_id: str) -> list[bytes]:
    """Three files of one study in two series (CT_small twice, MR_small once): fresh UIDs, the
    patient's ID, name and birth date."""
    study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    files = []
    for name, series in (
        ("CT_small.dcm", ct_series),
        ("CT_small.dcm", ct_series),
        ("MR_small.dcm", mr_series),
    ):
        ds = fresh_instance(name, study=study, series=series)
        ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient_id, PATIENT_NAME, BIRTH_DATE
        files.append(part10_bytes(ds))
    return files


def register(node: Node, *, orthanc_port: int) -> None:
    """Orthanc's AE title as an application entity of ``node``, acting as its own account."""
    node.shell(
        "from django.contrib.auth.models import User; from dimse.models import ApplicationEntity;"
        f"ApplicationEntity.objects.create(ae_title={ORTHANC_AET!r}, description='Orthanc peer',"
        f" host='127.0.0.1', port={orthanc_port}, account=User.objects.create_user({ACCOUNT!r}),"
        " may_store=True, may_query=True, may_retrieve=True);"
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
        for each in (node, strict):
            register(each, orthanc_port=orthanc_port)
        with running_orthanc(
            work / "orthanc",
            DicomServerEnabled=True,
            DicomAet=ORTHANC_AET,
            DicomPort=orthanc_port,
            DicomModalities=modalities(node, strict),
            DicomScuTimeout=60,
        ) as orthanc:
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
        for data in study_files(patient):
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


def forwarded_to_orthanc(orthanc: Rest, node: Node) -> dict:
    """To come with forwarding: Orthanc receives the de-identified files our node forwards, and its
    REST API shows no patient data."""
    raise NotImplementedError("forwarding is not built yet (issue 14)")


def retrieved_by_orthanc_with_c_move(orthanc: Rest, node: Node) -> dict:
    """To come with the C-MOVE SCP: Orthanc retrieves a study from us (``/modalities/svc/move``) to
    its own AE title, registered with its host and port above."""
    raise NotImplementedError("C-MOVE is not built yet (issue 14)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="orthanc-dimse-") as tmp:
        print(json.dumps(run(Path(tmp))))
