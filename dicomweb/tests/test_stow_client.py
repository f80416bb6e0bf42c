"""STOW-RS against the real service (``make run``'s server) with clients no one here wrote.

``dicomweb-client``'s ``store_instances`` (which sends a body over its ``chunk_size``, 1 MB by
default, with ``Transfer-Encoding: chunked``), and raw ``http.client`` for a chunked body and for a
body whose parts arrive slowly (each part is staged while the next is still on its way).
"""

import hashlib
import http.client
import json
import time

import pytest
from requests import HTTPError

from dicom.tests.services.dicom_builders import fresh_instance, part10_bytes

pytestmark = pytest.mark.slow

BOUNDARY = "live-stow-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


def body(*payloads: bytes) -> bytes:
    out = bytearray()
    for payload in payloads:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload + b"\r\n"
    return bytes(out + f"--{BOUNDARY}--\r\n".encode())


def zeroed_sha(payload: bytes) -> str:
    return hashlib.sha256(bytes(128) + payload[128:]).hexdigest()


def stored(server, sop_instance_uid: str) -> list[dict]:
    """The file rows of a SOP Instance UID in the server's database: id, sha256, study."""
    code = (
        "import json;from dicom.models import DicomFile;"
        f"print(json.dumps([{{'id': str(f.id), 'sha256': f.sha256, 'study': f.study_instance_uid}} "
        f"for f in DicomFile.objects.filter(sop_instance_uid={sop_instance_uid!r})]))"
    )
    return json.loads(server.manage(code).strip().splitlines()[-1])


def downloaded_sha(server, file_id: str) -> str:
    status, data = server.live.request("GET", f"/api/dicom/download/{file_id}")
    assert status == 200
    return hashlib.sha256(data).hexdigest()


def staging_dir(server):
    return server.data_dir / "files" / ".staging"


def test_dicomweb_client_stores_instances_and_the_bytes_are_the_parts(dicomweb_server):
    client = dicomweb_server.client()
    first = fresh_instance()
    second = fresh_instance("MR_small.dcm", study=first.StudyInstanceUID)
    result = client.store_instances(datasets=[first, second])
    assert [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence] == [
        first.SOPInstanceUID,
        second.SOPInstanceUID,
    ]
    # dicomweb-client sends "Host: 127.0.0.1" without the port on bodies it does not chunk (its
    # workaround of a requests bug): the URL is built from the Host the client sent.
    assert result.RetrieveURL == f"http://127.0.0.1/dicomweb/studies/{first.StudyInstanceUID}"
    assert "FailedSOPSequence" not in result
    for dataset in (first, second):
        (row,) = stored(dicomweb_server, dataset.SOPInstanceUID)
        assert row["sha256"] == zeroed_sha(part10_bytes(dataset))
        assert downloaded_sha(dicomweb_server, row["id"]) == row["sha256"]


def test_dicomweb_client_sends_a_body_over_its_chunk_size_chunked_and_it_is_stored(dicomweb_server):
    client = dicomweb_server.client()
    study = fresh_instance().StudyInstanceUID
    datasets = [fresh_instance(study=study) for _ in range(30)]  # ~1.2 MB: over chunk_size (1e6)
    assert sum(len(part10_bytes(d)) for d in datasets) > 10**6
    result = client.store_instances(datasets=datasets, study_instance_uid=study)
    assert len(result.ReferencedSOPSequence) == 30
    for dataset in (datasets[0], datasets[-1]):
        (row,) = stored(dicomweb_server, dataset.SOPInstanceUID)
        assert downloaded_sha(dicomweb_server, row["id"]) == zeroed_sha(part10_bytes(dataset))


def test_dicomweb_client_sees_a_409_for_another_study_and_nothing_is_stored(dicomweb_server):
    client = dicomweb_server.client()
    dataset = fresh_instance()
    with pytest.raises(HTTPError) as raised:
        client.store_instances(datasets=[dataset], study_instance_uid=fresh_instance().StudyInstanceUID)
    assert raised.value.response.status_code == 409
    answer = raised.value.response.json()
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0x0110]
    assert stored(dicomweb_server, dataset.SOPInstanceUID) == []


def test_a_chunked_body_over_http_client_is_stored(dicomweb_server):
    datasets = [fresh_instance() for _ in range(3)]
    data = body(*(part10_bytes(d) for d in datasets))
    blocks = [data[i : i + 7000] for i in range(0, len(data), 7000)]
    status, answer = dicomweb_server.live.request(
        "POST", "/dicomweb/studies", body=iter(blocks), headers={"Content-Type": CONTENT_TYPE}, chunked=True
    )
    assert status == 200, answer
    assert [item["00081155"]["Value"][0] for item in json.loads(answer)["00081199"]["Value"]] == [
        d.SOPInstanceUID for d in datasets
    ]
    for dataset in datasets:
        (row,) = stored(dicomweb_server, dataset.SOPInstanceUID)
        assert row["sha256"] == zeroed_sha(part10_bytes(dataset))


def _stow_request(server, *, length: int) -> http.client.HTTPConnection:
    """A STOW-RS request of ``length`` bytes whose headers are sent: the body is the caller's to send."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/dicomweb/studies")
    conn.putheader("Authorization", f"Token {server.token}")
    conn.putheader("Content-Type", CONTENT_TYPE)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    return conn


def test_parts_arriving_slowly_are_staged_one_by_one_as_they_arrive(dicomweb_server):
    first, second = fresh_instance(), fresh_instance()
    data = body(part10_bytes(first), part10_bytes(second))
    # Up to the middle of the second part: the first is complete, the second being written.
    middle = data.index(b"DICM", data.index(b"DICM") + 4) + 10_000
    conn = _stow_request(dicomweb_server, length=len(data))
    before = set(staging_dir(dicomweb_server).iterdir())
    for offset in range(0, middle, 4096):
        conn.send(data[offset : min(offset + 4096, middle)])
        time.sleep(0.02)
    time.sleep(0.5)
    during = set(staging_dir(dicomweb_server).iterdir()) - before
    sizes = sorted(path.stat().st_size for path in during)
    conn.send(data[middle:])
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    # Two staging files while the body was still arriving: the first part whole, the second growing.
    assert len(during) == 2
    assert len(part10_bytes(first)) in sizes
    assert response.status == 200, answer
    assert not any(path.exists() for path in during)  # renamed into storage
    for dataset in (first, second):
        (row,) = stored(dicomweb_server, dataset.SOPInstanceUID)
        assert downloaded_sha(dicomweb_server, row["id"]) == zeroed_sha(part10_bytes(dataset))


def test_a_body_that_is_not_stow_is_a_415_and_bad_parameters_a_400_over_the_real_server(dicomweb_server):
    data = body(part10_bytes(fresh_instance()))
    status, answer = dicomweb_server.live.request(
        "POST", "/dicomweb/studies", body=data, headers={"Content-Type": "multipart/related; boundary=x"}
    )
    assert status == 415 and set(json.loads(answer)) == {"detail"}
    before = set(staging_dir(dicomweb_server).iterdir())
    status, answer = dicomweb_server.live.request(
        "POST", "/dicomweb/studies?anonymize=perhaps", body=data, headers={"Content-Type": CONTENT_TYPE}
    )
    assert status == 400 and set(json.loads(answer)) == {"detail"}
    assert set(staging_dir(dicomweb_server).iterdir()) == before


def test_dicomweb_client_gets_the_stored_and_the_failed_of_a_partly_stored_body_202(dicomweb_server):
    client = dicomweb_server.client()
    match = fresh_instance()
    other = fresh_instance()
    result = client.store_instances(datasets=[match, other], study_instance_uid=match.StudyInstanceUID)
    assert [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence] == [match.SOPInstanceUID]
    (failure,) = result.FailedSOPSequence
    assert (failure.ReferencedSOPInstanceUID, failure.FailureReason) == (other.SOPInstanceUID, 0x0110)
    assert stored(dicomweb_server, other.SOPInstanceUID) == []


def test_a_client_that_goes_away_mid_body_leaves_no_staged_part(dicomweb_server):
    data = body(part10_bytes(fresh_instance()), part10_bytes(fresh_instance()))
    before = set(staging_dir(dicomweb_server).iterdir())
    conn = _stow_request(dicomweb_server, length=len(data))
    conn.send(data[: len(data) * 3 // 4])  # the first part whole, the second begun
    time.sleep(0.5)
    assert len(set(staging_dir(dicomweb_server).iterdir()) - before) == 2
    conn.close()
    for _ in range(50):
        if set(staging_dir(dicomweb_server).iterdir()) == before:
            break
        time.sleep(0.1)
    assert set(staging_dir(dicomweb_server).iterdir()) == before
