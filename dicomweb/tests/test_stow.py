"""STOW-RS through DRF's test client: the body's forms, each part's outcome, the answer's statuses.

The test client hands the body to the view as a stream (the WSGI path), so these exercise the same
reader the web server feeds (``dicomweb.multipart``); ``test_stow_client.py`` runs the real server.
"""

import hashlib
import time
import tracemalloc

import pydicom
import pytest
from pydicom.uid import generate_uid

from audit.models import AuditLog
from dicom.models import DicomFile
from dicom.services import storage
from dicom.tests.services.dicom_builders import fresh_instance, part10_bytes
from dicomweb.multipart import (
    MultipartError,
    MultipartReader,
    PartData,
    PartStager,
    PartStart,
    read_parts,
    related_boundary,
)

pytestmark = pytest.mark.django_db

BOUNDARY = "stow-test-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def body(*parts: bytes, part_type: str = "application/dicom", lead: bytes = b"", close: bool = True) -> bytes:
    out = bytearray(lead)
    for payload in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + payload + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def stow(
    api, data: bytes, *, path: str = "/dicomweb/studies", content_type: str = CONTENT_TYPE, query: str = ""
):
    return api.generic("POST", path + (f"?{query}" if query else ""), data=data, content_type=content_type)


def zeroed_sha(payload: bytes) -> str:
    return hashlib.sha256(bytes(128) + payload[128:]).hexdigest()


def referenced(response) -> list[dict]:
    return response.json().get("00081199", {}).get("Value", [])


def failed(response) -> list[dict]:
    return response.json().get("00081198", {}).get("Value", [])


def staged_files() -> list:
    return list(storage.staging_dir().iterdir())


# --- the reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary="b-1"',
        "multipart/related; type=application/dicom; boundary=b-1",
        'Multipart/Related;boundary="b-1";TYPE="Application/DICOM"',
    ],
)
def test_the_boundary_is_read_quoted_or_not_and_the_type_in_any_case(content_type):
    assert related_boundary(content_type, part_type="application/dicom") == "b-1"


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=b-1",
        "multipart/related; boundary=b-1",
        'multipart/related; type="application/dicom+json"; boundary=b-1',
        'multipart/related; type="application/dicom"',
    ],
)
def test_other_content_types_are_refused_by_the_reader(content_type):
    with pytest.raises(MultipartError):
        related_boundary(content_type, part_type="application/dicom")


@pytest.mark.parametrize("junk", ["x" * 16_000, "x;" * 8_000, '"' * 16_000, 'x="' + "\\" * 16_000])
def test_hostile_content_type_values_are_read_in_linear_time(junk):
    started = time.perf_counter()
    with pytest.raises(MultipartError):
        related_boundary(f"multipart/related; {junk}", part_type="application/dicom")
    assert time.perf_counter() - started < 0.5


def _parse(data: bytes, step: int) -> list[tuple[dict, bytes]]:
    reader = MultipartReader(BOUNDARY, max_parts=10, max_header_size=1024)
    parts: list = []
    for offset in range(0, len(data), step):
        for event in reader.feed(data[offset : offset + step]):
            if isinstance(event, PartStart):
                parts.append([event.headers, b""])
            elif isinstance(event, PartData):
                parts[-1][1] += event.data
    assert reader.close().complete
    return [tuple(part) for part in parts]


@pytest.mark.parametrize("step", [1, 2, 5, 17, 10_000])
def test_parts_come_out_whole_however_the_body_is_cut(step):
    tricky = b"\r\n--stow-test\r\r\n--" + bytes(range(256))
    data = body(b"first", tricky, lead=b"a preamble\r\n") + b"an epilogue"
    assert _parse(data, step) == [
        ({"content-type": "application/dicom"}, b"first"),
        ({"content-type": "application/dicom"}, tricky),
    ]


def test_transport_padding_after_a_delimiter_and_a_part_without_headers_are_read():
    data = f"--{BOUNDARY} \t\r\n\r\nno headers\r\n--{BOUNDARY}--  \r\n".encode()
    assert _parse(data, 3) == [({}, b"no headers")]


def test_a_large_part_is_staged_without_being_held_in_memory(settings, storage_root):
    settings.DICOM_MAX_UPLOAD_SIZE = 64 * 1024 * 1024
    block = bytes(range(256)) * 256  # 64 KiB, with CRs in it
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    stager = PartStager(BOUNDARY, part_type="application/dicom", max_parts=10, max_header_size=1024)
    tracemalloc.start()
    try:
        stager.write(head)
        digest = hashlib.sha256(bytes(128))
        digest.update(block[128:])
        stager.write(block)
        for _ in range(479):  # 30 MiB in all
            stager.write(block)
            digest.update(block)
        stager.write(f"\r\n--{BOUNDARY}--\r\n".encode())
        result = stager.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (part,) = result.parts
    assert part.upload.size == 480 * len(block)
    assert part.upload.sha256 == digest.hexdigest()
    assert peak < 2 * 1024 * 1024  # a few blocks, never the part
    result.close()
    assert staged_files() == []


def test_read_parts_gives_whole_parts_and_refuses_a_body_cut_short():
    data = body(b"one", b"\r\ntwo\r\n")
    parts = read_parts([data[:7], data[7:]], BOUNDARY)
    assert [(part.content_type, part.body) for part in parts] == [
        ("application/dicom", b"one"),
        ("application/dicom", b"\r\ntwo\r\n"),
    ]
    with pytest.raises(MultipartError):
        read_parts(data[:-10], BOUNDARY)


# --- the service ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"',
        f"multipart/related; type=application/dicom; boundary={BOUNDARY}",
    ],
)
@pytest.mark.parametrize("lead", [b"", b"\r\n", b"preamble text\r\n"])
def test_instances_are_stored_and_referenced_with_their_retrieve_urls(api, content_type, lead):
    first, second = fresh_instance(), fresh_instance("MR_small.dcm")
    second.StudyInstanceUID = first.StudyInstanceUID
    payloads = [part10_bytes(first), part10_bytes(second)]
    response = stow(api, body(*payloads, lead=lead), content_type=content_type)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/dicom+json"
    root = "http://testserver/dicomweb"
    assert response.json()["00081190"] == {"vr": "UR", "Value": [f"{root}/studies/{first.StudyInstanceUID}"]}
    assert "00081198" not in response.json()
    items = referenced(response)
    assert [item["00081155"]["Value"][0] for item in items] == [first.SOPInstanceUID, second.SOPInstanceUID]
    assert items[0]["00081150"]["Value"] == [str(first.SOPClassUID)]
    assert items[1]["00081190"]["Value"] == [
        f"{root}/studies/{second.StudyInstanceUID}/series/{second.SeriesInstanceUID}/instances/{second.SOPInstanceUID}"
    ]
    stored = {f.sop_instance_uid: f for f in DicomFile.objects.all()}
    assert set(stored) == {first.SOPInstanceUID, second.SOPInstanceUID}
    for dataset, payload in zip((first, second), payloads, strict=True):
        dicom_file = stored[dataset.SOPInstanceUID]
        assert dicom_file.sha256 == zeroed_sha(payload)
        assert storage.sha256_of(storage.local_path(dicom_file.storage_key)) == zeroed_sha(payload)
    assert staged_files() == []
    rows = AuditLog.objects.filter(action=AuditLog.Action.UPLOAD)
    assert sorted((row.success, str(row.file_id)) for row in rows) == sorted(
        (True, str(f.id)) for f in stored.values()
    )


def test_a_body_whose_closing_boundary_is_missing_keeps_its_complete_parts(api):
    dataset = fresh_instance()
    data = body(part10_bytes(dataset), close=False)  # the part ends at its CRLF, no delimiter after
    response = stow(api, data)
    # The part is cut short: nothing says it ended.
    assert response.status_code == 400
    assert failed(response) == [{"00081197": {"vr": "US", "Value": [0xC000]}}]
    assert DicomFile.objects.count() == 0
    assert staged_files() == []


def test_a_delimiter_without_its_close_ends_the_body_with_every_part_complete(api):
    dataset = fresh_instance()
    data = body(part10_bytes(dataset), close=False) + f"--{BOUNDARY}".encode()
    response = stow(api, data)
    assert response.status_code == 200
    assert DicomFile.objects.get().sop_instance_uid == dataset.SOPInstanceUID


def test_a_truncated_part_fails_and_the_others_are_stored_202(api):
    good, cut = fresh_instance(), fresh_instance()
    response = stow(api, body(part10_bytes(good), part10_bytes(cut)[:2000]))
    assert response.status_code == 202
    assert [item["00081155"]["Value"][0] for item in referenced(response)] == [good.SOPInstanceUID]
    (item,) = failed(response)
    assert item["00081197"]["Value"] == [0xC000]
    # Its dataset cannot be read, its file meta can: the item names the UIDs the client sent.
    assert item["00081155"]["Value"] == [cut.SOPInstanceUID]
    assert item["00081150"]["Value"] == [str(cut.SOPClassUID)]
    assert list(DicomFile.objects.values_list("sop_instance_uid", flat=True)) == [good.SOPInstanceUID]
    assert staged_files() == []
    failures = AuditLog.objects.filter(action=AuditLog.Action.UPLOAD, success=False)
    assert failures.count() == 1 and failures.get().status_code == 400


def test_a_part_that_is_not_dicom_fails_with_0xc000(api):
    response = stow(api, body(b"this is not DICOM at all" * 20))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/dicom+json"
    assert [item["00081197"]["Value"] for item in failed(response)] == [[0xC000]]
    assert referenced(response) == []
    assert DicomFile.objects.count() == 0
    assert staged_files() == []


def test_a_part_of_another_content_type_fails_with_0xc000_unread(api):
    dataset = fresh_instance()
    data = body(part10_bytes(dataset), part_type="application/octet-stream")
    response = stow(api, data)
    assert response.status_code == 400
    assert [item["00081197"]["Value"] for item in failed(response)] == [[0xC000]]
    assert DicomFile.objects.count() == 0
    assert AuditLog.objects.get(action=AuditLog.Action.UPLOAD).success is False


def test_an_instance_of_another_study_than_the_path_is_a_409_with_0x0110(api):
    dataset = fresh_instance()
    other_study = generate_uid()
    response = stow(api, body(part10_bytes(dataset)), path=f"/dicomweb/studies/{other_study}")
    assert response.status_code == 409
    (item,) = failed(response)
    assert item["00081197"]["Value"] == [0x0110]
    assert item["00081155"]["Value"] == [dataset.SOPInstanceUID]
    assert item["00081150"]["Value"] == [str(dataset.SOPClassUID)]
    assert DicomFile.objects.count() == 0
    assert staged_files() == []
    row = AuditLog.objects.get(action=AuditLog.Action.UPLOAD)
    assert (row.success, row.status_code) == (False, 409)


def test_mixed_studies_under_a_study_path_store_the_matching_ones_202(api):
    match, other = fresh_instance(), fresh_instance()
    response = stow(
        api,
        body(part10_bytes(other), part10_bytes(match)),
        path=f"/dicomweb/studies/{match.StudyInstanceUID}",
    )
    assert response.status_code == 202
    assert [item["00081155"]["Value"][0] for item in referenced(response)] == [match.SOPInstanceUID]
    assert [item["00081197"]["Value"] for item in failed(response)] == [[0x0110]]
    assert response.json()["00081190"]["Value"][0].endswith(f"/studies/{match.StudyInstanceUID}")


def test_a_part_over_the_size_limit_fails_with_0xa700_and_nothing_of_it_stays(api, settings):
    small = fresh_instance("MR_small.dcm")  # ~10 kB
    big = fresh_instance()  # ~39 kB
    settings.DICOM_MAX_UPLOAD_SIZE = 20_000
    response = stow(api, body(part10_bytes(big), part10_bytes(small)))
    assert response.status_code == 202
    assert [item["00081197"]["Value"] for item in failed(response)] == [[0xA700]]
    assert DicomFile.objects.get().sop_instance_uid == small.SOPInstanceUID
    assert staged_files() == []


def test_more_parts_than_the_limit_is_a_400_detail_and_nothing_is_stored(api, settings):
    settings.DICOMWEB_MAX_PARTS = 2
    data = body(*(part10_bytes(fresh_instance("MR_small.dcm")) for _ in range(3)))
    response = stow(api, data)
    assert response.status_code == 400
    assert response.json() == {"detail": "the body has more than 2 parts"}
    assert DicomFile.objects.count() == 0
    assert staged_files() == []
    row = AuditLog.objects.get(action=AuditLog.Action.UPLOAD)
    assert (row.success, row.status_code) == (False, 400)


def test_part_headers_over_the_limit_are_a_400_detail(api, settings):
    settings.DICOMWEB_MAX_PART_HEADER_SIZE = 256
    data = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\nX-Pad: {'x' * 400}\r\n\r\n".encode()
    response = stow(api, data + b"DICM\r\n" + f"--{BOUNDARY}--".encode())
    assert response.status_code == 400
    assert "headers exceed 256 bytes" in response.json()["detail"]
    assert staged_files() == []


@pytest.mark.parametrize("data", [b"", b"no boundary anywhere in this body"])
def test_a_body_without_parts_is_a_400_detail(api, data):
    response = stow(api, data)
    assert response.status_code == 400
    assert set(response.json()) == {"detail"}
    assert DicomFile.objects.count() == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        "multipart/related; boundary=x",
        'multipart/related; type="application/dicom+xml"; boundary=x',
    ],
)
def test_a_body_that_is_not_multipart_related_dicom_is_a_415_detail_audited_once(api, content_type):
    response = stow(api, body(part10_bytes(fresh_instance())), content_type=content_type)
    assert response.status_code == 415
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"detail"}
    row = AuditLog.objects.get()
    assert (row.action, row.success, row.status_code) == (AuditLog.Action.UPLOAD, False, 415)
    assert DicomFile.objects.count() == 0


@pytest.mark.parametrize(
    "query",
    [
        "anonymize=maybe",
        "unknown_option=true",
        "study_type=Not%20A%20Label",
        "anonymize=true&anonymize=false",
    ],
)
def test_bad_query_parameters_are_a_400_detail_and_leave_nothing_behind(api, query):
    response = stow(api, body(part10_bytes(fresh_instance())), query=query)
    assert response.status_code == 400
    assert set(response.json()) == {"detail"}
    assert DicomFile.objects.count() == 0
    assert staged_files() == []
    row = AuditLog.objects.get()
    assert (row.action, row.success, row.status_code) == (AuditLog.Action.UPLOAD, False, 400)


def test_anonymize_stores_the_de_identified_instances_and_names_their_new_uids(api):
    dataset = fresh_instance()
    response = stow(
        api,
        body(part10_bytes(dataset)),
        path=f"/dicomweb/studies/{dataset.StudyInstanceUID}",  # the original study is the path's
        query="anonymize=true&study_type=ct",
    )
    assert response.status_code == 200, response.content
    (item,) = referenced(response)
    stored = DicomFile.objects.get()
    assert stored.anonymized and stored.study_type == "ct"
    new_uid = item["00081155"]["Value"][0]
    assert new_uid == stored.sop_instance_uid != dataset.SOPInstanceUID
    assert stored.study_instance_uid != dataset.StudyInstanceUID
    assert item["00081196"]["Value"] == [0xB000]
    assert response.json()["00081190"]["Value"][0].endswith(f"/studies/{stored.study_instance_uid}")
    on_disk = pydicom.dcmread(storage.local_path(stored.storage_key))
    assert on_disk.SOPInstanceUID == new_uid
    assert on_disk.PatientName != dataset.PatientName
    assert not DicomFile.objects.filter(sop_instance_uid=dataset.SOPInstanceUID).exists()
    assert staged_files() == []


def test_anonymize_with_another_study_in_the_path_is_a_409(api):
    dataset = fresh_instance()
    response = stow(
        api, body(part10_bytes(dataset)), path=f"/dicomweb/studies/{generate_uid()}", query="anonymize=true"
    )
    assert response.status_code == 409
    assert DicomFile.objects.count() == 0


def test_storing_the_same_bytes_again_references_the_existing_instance(api):
    payload = part10_bytes(fresh_instance())
    first = stow(api, body(payload))
    again = stow(api, body(payload))
    assert first.status_code == again.status_code == 200
    assert referenced(first) == referenced(again)
    stored = DicomFile.objects.get()
    assert len(list(storage.local_path(stored.storage_key).parent.parent.rglob("*.dcm"))) == 1
    rows = AuditLog.objects.filter(action=AuditLog.Action.UPLOAD, success=True)
    assert [str(row.file_id) for row in rows] == [str(stored.id)] * 2


def test_the_same_uid_with_other_bytes_is_a_new_version_and_another_users_copy_is_not_theirs(api, other_api):
    dataset = fresh_instance()
    payload = part10_bytes(dataset)
    assert stow(api, body(payload)).status_code == 200
    dataset.SeriesDescription = "changed"
    assert stow(api, body(part10_bytes(dataset))).status_code == 200
    assert DicomFile.objects.filter(sop_instance_uid=dataset.SOPInstanceUID).count() == 2
    # Another user sending the first bytes stores their own copy: they do not "have" alice's.
    assert stow(other_api, body(payload)).status_code == 200
    assert DicomFile.objects.filter(sop_instance_uid=dataset.SOPInstanceUID).count() == 3


def test_the_same_bytes_twice_in_one_body_are_stored_once(api):
    payload = part10_bytes(fresh_instance())
    response = stow(api, body(payload, payload))
    assert response.status_code == 200
    first, second = referenced(response)
    assert first == second
    assert DicomFile.objects.count() == 1


def test_query_fields_follow_the_configured_default_options_and_bad_ones_stay_bad(api, settings):
    assert stow(api, body(b"x"), query="anonymize=maybe").status_code == 400
    assert stow(api, body(b"x"), query="anonymize=maybe").status_code == 400
    dataset = fresh_instance()
    assert stow(api, body(part10_bytes(dataset)), query="anonymize=true").status_code == 200
    settings.DICOM_DEID_DEFAULT_OPTIONS = ["retain_uids"]
    again = fresh_instance()
    response = stow(api, body(part10_bytes(again)), query="anonymize=true")
    assert response.status_code == 200, response.content
    # The same query string, another default: the UIDs are kept this time.
    assert referenced(response)[0]["00081155"]["Value"] == [again.SOPInstanceUID]


def test_what_the_client_typed_in_the_path_or_a_parts_headers_never_reaches_an_audit_row(api):
    dataset = fresh_instance()
    response = stow(api, body(part10_bytes(dataset)), path="/dicomweb/studies/Doe^Jane")
    assert response.status_code == 409
    stow(api, body(b"DICM", part_type="text/Doe^Jane"))
    reasons = " ".join(AuditLog.objects.values_list("reason", flat=True))
    assert AuditLog.objects.count() == 2
    assert "Doe" not in reasons
