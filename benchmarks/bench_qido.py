"""QIDO-RS latency at scale: p50/p95 of typical searches against the real server of `make run`.

Starts scripts/run.sh on a throwaway PostgreSQL (scripts/pg_test.sh, normal durability), migrates,
fills it directly with ``bulk_create`` (default: 2,000 studies x 5 series x 10 instances = 100,000
instances; a tenth of the studies owned by one non-staff user, the rest by another, one study in
twenty a de-identified file), then times each search over one keep-alive connection, as a staff
member without the patient-data permission (``staff``: keys on patient data match only the
de-identified studies), as one with it (``phi``) and as the non-staff owner (``owner``):

  all studies (limit 25), PatientName wildcard, StudyDate range, ModalitiesInStudy,
  the series of a study, the instances of a series.

Every request is a full one: authentication, the search, DICOM JSON and its audit row.

Then the same searches as C-FIND (Study Root) against the DIMSE node ``run.sh`` starts, on the same
database, each role's account as a registered calling AE (``--find-requests`` per search, over one
association per role): the same search service and index, answered as pending identifiers.
``--explain ROLE`` also prints PostgreSQL's EXPLAIN ANALYZE of every query the searches of ROLE run.

Usage: .venv/bin/python benchmarks/bench_qido.py [--studies 2000] [--requests 200] [--find-requests 50]
       [--port 8766] [--explain staff|phi|owner]
"""

import argparse
import datetime as dt
import http.client
import os
import random
import socket
import statistics
import sys
import time
import uuid
from urllib.parse import urlencode

from service import HERE, free_port, running_service

sys.path.insert(0, str(HERE))

SURNAMES = ["SMITH", "JONES", "MILLER", "DAVIS", "GARCIA", "MARTIN", "MOORE", "TAYLOR", "LEE", "WHITE"]
MODALITIES = ["CT", "MR", "CR", "US", "PT"]


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def fill(*, studies: int, series_per_study: int, instances_per_series: int) -> dict:
    """Rows straight into the database (no files: a search reads only rows). Returns what the searches use."""
    from django.contrib.auth.models import Permission, User
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from dicom.models import DicomFile
    from dicom.services.search import index_columns

    hospital = User.objects.create_user("bench-hospital")
    owner = User.objects.create_user("bench-owner")
    staff = User.objects.create_user("bench-staff", is_staff=True)
    phi = User.objects.create_user("bench-phi", is_staff=True)
    phi.user_permissions.add(Permission.objects.get(codename="view_phi"))
    rng = random.Random(13)
    batch: list[DicomFile] = []
    sample = {}
    start = dt.date(2023, 1, 1)
    for number in range(studies):
        study_uid = _uid()
        name = f"{rng.choice(SURNAMES)}^{rng.choice(['ANNA', 'JOHN', 'MARY', 'PAUL'])}^{number}"
        study_date = start + dt.timedelta(days=rng.randrange(730))
        anonymized = number % 20 == 0
        user = owner if number % 10 == 0 else hospital
        for series_number in range(1, series_per_study + 1):
            series_uid = _uid()
            modality = MODALITIES[(number + series_number) % len(MODALITIES)]
            for instance_number in range(1, instances_per_series + 1):
                metadata = {
                    "patient_id": f"PID{number:06d}",
                    "patient_name": name,
                    "patient_birth_date": "1970-01-01",
                    "patient_sex": "F",
                    "patient_age": "053Y",
                    "study_date": study_date.isoformat(),
                    "study_time": "10:15:00",
                    "study_description": "CHEST",
                    "series_description": f"SERIES {series_number}",
                    "accession_number": f"A{number:07d}",
                    "modality": modality,
                    "study_instance_uid": study_uid,
                    "series_instance_uid": series_uid,
                    "sop_instance_uid": _uid(),
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                    "series_number": series_number,
                    "instance_number": instance_number,
                    "rows": 512,
                    "columns": 512,
                    "number_of_frames": 1,
                    "bits_allocated": 16,
                    "photometric_interpretation": "MONOCHROME2",
                    "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                }
                row = DicomFile(
                    owner=user,
                    status=DicomFile.Status.COMPLETED,
                    anonymized=anonymized,
                    storage_key=f"bench/{uuid.uuid4().hex}",
                    size=500_000,
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    modality=modality,
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    sop_instance_uid=metadata["sop_instance_uid"],
                    patient_id=metadata["patient_id"],
                    metadata=metadata,
                    **index_columns(
                        metadata, {"study_id": str(number), "referring_physician_name": "HOUSE^G"}
                    ),
                )
                batch.append(row)
                if user == owner:
                    sample.setdefault("owner", (study_uid, series_uid))
                else:
                    sample.setdefault("staff", (study_uid, series_uid))
                    sample.setdefault("phi", (study_uid, series_uid))
        if len(batch) >= 5000:
            DicomFile.objects.bulk_create(batch)
            batch = []
    DicomFile.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE dicom_dicomfile")
    sample["tokens"] = {
        "staff": Token.objects.create(user=staff).key,
        "phi": Token.objects.create(user=phi).key,
        "owner": Token.objects.create(user=owner).key,
    }
    return sample


def searches(study: str, series: str) -> list[tuple[str, str]]:
    return [
        ("all studies, limit 25", "/dicomweb/studies?limit=25"),
        ("PatientName=MIL*", "/dicomweb/studies?" + urlencode({"PatientName": "MIL*", "limit": 25})),
        ("StudyDate=20240101-20240131", "/dicomweb/studies?StudyDate=20240101-20240131&limit=25"),
        ("ModalitiesInStudy=MR", "/dicomweb/studies?ModalitiesInStudy=MR&limit=25"),
        ("series of a study", f"/dicomweb/studies/{study}/series"),
        ("instances of a series", f"/dicomweb/studies/{study}/series/{series}/instances"),
    ]


def measure(port: int, token: str, path: str, requests: int) -> tuple[float, float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Token {token}", "Accept": "application/dicom+json"}
    timings = []
    count = 0
    for index in range(requests + 5):
        began = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - began
        if response.status != 200:
            raise SystemExit(f"{path}: {response.status} {body[:200]!r}")
        if index >= 5:  # the first requests warm the workers' connections and caches
            timings.append(elapsed * 1000)
        count = body.count(b'"0020000D"')
    conn.close()
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.95) - 1], count


def find_searches(study: str, series: str) -> list[tuple[str, dict]]:
    """The searches above as C-FIND identifiers (no limit in C-FIND: all matches are sent, up to
    DICOM_SCP_MAX_FIND_RESULTS), with the return keys a workstation's study list asks for."""
    study_keys = {
        "PatientName": "",
        "PatientID": "",
        "StudyDate": "",
        "AccessionNumber": "",
        "StudyDescription": "",
    }
    return [
        ("PatientName=MIL*", {"QueryRetrieveLevel": "STUDY", **study_keys, "PatientName": "MIL*"}),
        ("StudyDate=20240101-20240131", {"QueryRetrieveLevel": "STUDY", **study_keys, "StudyDate": "20240101-20240131"}),
        ("ModalitiesInStudy=MR", {"QueryRetrieveLevel": "STUDY", **study_keys, "ModalitiesInStudy": "MR"}),
        ("one study by UID", {"QueryRetrieveLevel": "STUDY", **study_keys, "StudyInstanceUID": study}),
        ("series of a study", {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study, "SeriesInstanceUID": "", "Modality": ""}),
        (
            "instances of a series",
            {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": ""},
        ),
    ]  # fmt: skip


def register_find_aes(roles: list[str]) -> dict[str, str]:
    """One calling AE title per role, acting as that role's account and allowed to query."""
    from django.contrib.auth.models import User

    from dimse.models import ApplicationEntity

    titles = {}
    for who in roles:
        title = f"BENCH{who.upper()}"[:16]
        ApplicationEntity.objects.create(
            ae_title=title, account=User.objects.get(username=f"bench-{who}"), may_query=True
        )
        titles[who] = title
    return titles


def measure_find(port: int, calling_ae: str, identifier: dict, requests: int) -> tuple[float, float, int]:
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMSVC")
    if not assoc.is_established:
        raise SystemExit(f"C-FIND: the node refused the association of {calling_ae}")
    # As a tuned client does (DCMTK: TCP_NODELAY=1): without it, Nagle's algorithm holds the
    # request's second PDU for the node's delayed ACK, about 40 ms per request.
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    query = Dataset()
    for keyword, value in identifier.items():
        setattr(query, keyword, value)
    timings, count = [], 0
    try:
        for index in range(requests + 2):
            began = time.perf_counter()
            count, final = 0, None
            for status, _identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if status and status.Status in (0xFF00, 0xFF01):
                    count += 1
                else:
                    final = status.Status if status else None
            elapsed = time.perf_counter() - began
            if final not in (0x0000, 0xB001):
                raise SystemExit(f"C-FIND {identifier}: final status {final}")
            if index >= 2:
                timings.append(elapsed * 1000)
    finally:
        assoc.release()
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.95) - 1], count


def wait_for_node(port: int, seconds: float = 60) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="BENCHPROBE")
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMSVC")
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.5)
    raise SystemExit(f"the DIMSE node did not answer on port {port}")


def explain(path: str, who: str) -> None:
    """EXPLAIN ANALYZE of every query a search of ``path`` as ``who`` runs (in this process)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    token = Token.objects.get(user__username=f"bench-{who}").key
    with CaptureQueriesContext(connection) as captured:
        Client().get(
            path,
            HTTP_HOST="127.0.0.1",
            HTTP_AUTHORIZATION=f"Token {token}",
            HTTP_ACCEPT="application/dicom+json",
        )
    for query in captured.captured_queries:
        sql = query["sql"]
        if not sql.lstrip().upper().startswith("SELECT") or "dicom_dicomfile" not in sql:
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN ANALYZE " + sql)
            plan = "\n    ".join(row[0] for row in cursor.fetchall())
        print(f"  {sql[:160]}...\n    {plan}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--series", type=int, default=5)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--find-requests", type=int, default=50, help="C-FIND requests per search (0: none)")
    parser.add_argument("--roles", default="staff,phi,owner", help="comma-separated: staff, phi, owner")
    parser.add_argument(
        "--explain", choices=["staff", "phi", "owner"], help="print the query plans of this role"
    )
    args = parser.parse_args()
    port = args.port or free_port()
    with running_service(port=port, database="postgres") as service:
        os.environ.update(
            DATABASE_URL=service.env["DATABASE_URL"], DICOM_DATA_DIR=service.env["DICOM_DATA_DIR"]
        )
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomsite.settings")
        import django

        django.setup()
        began = time.perf_counter()
        sample = fill(studies=args.studies, series_per_study=args.series, instances_per_series=args.instances)
        total = args.studies * args.series * args.instances
        print(f"{total} instances ({args.studies} studies) filled in {time.perf_counter() - began:.0f} s")
        print(f"{'search':32} {'as':6} {'p50 ms':>8} {'p95 ms':>8} {'results':>8}")
        for who in args.roles.split(","):
            study, series = sample[who]
            for name, path in searches(study, series):
                p50, p95, count = measure(port, sample["tokens"][who], path, args.requests)
                print(f"{name:32} {who:6} {p50:8.1f} {p95:8.1f} {count:8d}")
        if args.find_requests:
            import logging

            logging.getLogger("pynetdicom").setLevel(logging.WARNING)
            dimse_port = int(service.env["DICOM_SCP_PORT"])
            wait_for_node(dimse_port)
            titles = register_find_aes(args.roles.split(","))
            print(f"\nC-FIND (Study Root) on the DIMSE node, {args.find_requests} requests per search")
            print(f"{'search':32} {'as':6} {'p50 ms':>8} {'p95 ms':>8} {'matches':>8}")
            for who in args.roles.split(","):
                study, series = sample[who]
                for name, identifier in find_searches(study, series):
                    p50, p95, count = measure_find(dimse_port, titles[who], identifier, args.find_requests)
                    print(f"{name:32} {who:6} {p50:8.1f} {p95:8.1f} {count:8d}")
        if args.explain:
            study, series = sample[args.explain]
            for name, path in searches(study, series):
                print(f"\n{name} ({path}):")
                explain(path, args.explain)


if __name__ == "__main__":
    main()
