"""WADO-RS with a client no one here wrote (``dicomweb-client``), over a real socket, against the
service as ``make run`` starts it. Files are stored through the REST upload (raw body)."""

from __future__ import annotations

import http.client
import io

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import generate_uid

pytestmark = pytest.mark.slow


def _store(server, name: str, *, study: str | None = None, series: str | None = None):
    """Store a bundled test file under fresh (or the given) UIDs; the dataset stored."""
    ds = dcmread(get_testdata_file(name))
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = requests.post(
        f"http://127.0.0.1:{server.port}/api/dicom/upload",
        data=buffer.getvalue(),
        headers={"Authorization": f"Token {server.token}", "Content-Type": "application/dicom"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return ds


def _uids(ds) -> tuple[str, str, str]:
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_instances_series_and_studies_come_back_whole(dicomweb_server):
    first = _store(dicomweb_server, "CT_small.dcm")
    second = _store(
        dicomweb_server, "CT_small.dcm", study=first.StudyInstanceUID, series=first.SeriesInstanceUID
    )
    other_series = _store(dicomweb_server, "MR_small.dcm", study=first.StudyInstanceUID)
    client = dicomweb_server.client()

    instance = client.retrieve_instance(*_uids(first))
    assert instance.SOPInstanceUID == first.SOPInstanceUID
    assert np.array_equal(instance.pixel_array, first.pixel_array)
    series = client.retrieve_series(first.StudyInstanceUID, first.SeriesInstanceUID)
    assert {ds.SOPInstanceUID for ds in series} == {first.SOPInstanceUID, second.SOPInstanceUID}
    study = client.retrieve_study(first.StudyInstanceUID)
    assert {ds.SOPInstanceUID for ds in study} == {
        first.SOPInstanceUID,
        second.SOPInstanceUID,
        other_series.SOPInstanceUID,
    }
    streamed = list(client.iter_series(first.StudyInstanceUID, first.SeriesInstanceUID))
    assert len(streamed) == 2


def test_a_compressed_instance_as_stored_and_transcoded_to_explicit_vr_little_endian(dicomweb_server):
    ds = _store(dicomweb_server, "JPEG2000.dcm")
    client = dicomweb_server.client()
    stored = client.retrieve_instance(*_uids(ds), media_types=(("application/dicom", "*"),))
    assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    explicit = client.retrieve_instance(
        *_uids(ds), media_types=(("application/dicom", "1.2.840.10008.1.2.1"),)
    )
    assert explicit.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(explicit.pixel_array, ds.pixel_array)
    with pytest.raises(requests.HTTPError) as refused:
        client.retrieve_instance(*_uids(ds), media_types=(("application/dicom", "1.2.840.10008.1.2.4.50"),))
    assert refused.value.response.status_code == 406


def test_metadata_at_every_level_and_bulk_data_at_its_uris(dicomweb_server):
    ds = _store(dicomweb_server, "CT_small.dcm")
    client = dicomweb_server.client()
    instance = client.retrieve_instance_metadata(*_uids(ds))
    assert instance["00080018"]["Value"] == [ds.SOPInstanceUID]
    assert client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID) == [instance]
    assert client.retrieve_study_metadata(ds.StudyInstanceUID) == [instance]

    # dicomweb-client sends "Host: 127.0.0.1" without the port (it sets Host to the URL's host name),
    # so the absolute URIs the service builds from it name port 80; put the port back to follow them.
    root = f"http://127.0.0.1/dicomweb/studies/{ds.StudyInstanceUID}/series/"
    pixel_uri = instance["7FE00010"]["BulkDataURI"]
    assert pixel_uri.startswith(root) and pixel_uri.endswith("/bulkdata/7FE00010")
    pixel_uri = pixel_uri.replace("http://127.0.0.1/", f"http://127.0.0.1:{dicomweb_server.port}/")
    [pixels] = client.retrieve_bulkdata(pixel_uri)
    assert pixels == ds.PixelData
    private_uri = instance["00431029"]["BulkDataURI"].replace(
        "127.0.0.1/", f"127.0.0.1:{dicomweb_server.port}/"
    )
    [private] = client.retrieve_bulkdata(private_uri, media_types=("application/octet-stream",))
    assert private == ds[0x00431029].value
    # The model's dataset is what pydicom reads back from it (less the bulk data it does not fetch).
    rebuilt = Dataset.from_json(instance, bulk_data_uri_handler=lambda *args: b"")
    assert rebuilt.PatientName == ds.PatientName and rebuilt.Rows == ds.Rows


def test_frames_native_and_compressed_in_the_media_types_asked(dicomweb_server):
    client = dicomweb_server.client()
    native = _store(dicomweb_server, "rtdose.dcm")
    frames = client.retrieve_instance_frames(*_uids(native), frame_numbers=[2, 1])
    array = native.pixel_array
    assert frames == [array[1].astype(array.dtype.newbyteorder("<")).tobytes(), array[0].tobytes()]

    j2k = _store(dicomweb_server, "JPEG2000.dcm")
    codec = get_frame(j2k.PixelData, 0, number_of_frames=1)
    ts = str(j2k.file_meta.TransferSyntaxUID)
    assert client.retrieve_instance_frames(*_uids(j2k), frame_numbers=[1]) == [codec]
    assert client.retrieve_instance_frames(
        *_uids(j2k), frame_numbers=[1], media_types=(("image/jp2", ts),)
    ) == [codec]
    as_stored = client.retrieve_instance_frames(
        *_uids(j2k), frame_numbers=[1], media_types=(("application/octet-stream", "*"),)
    )
    assert as_stored == [codec]
    [decoded] = client.retrieve_instance_frames(
        *_uids(j2k), frame_numbers=[1], media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),)
    )
    assert np.array_equal(
        np.frombuffer(decoded, dtype=j2k.pixel_array.dtype).reshape(j2k.pixel_array.shape), j2k.pixel_array
    )
    with pytest.raises(requests.HTTPError) as missing:
        client.retrieve_instance_frames(*_uids(j2k), frame_numbers=[2])
    assert missing.value.response.status_code == 404


def test_rendered_images_and_thumbnails_decode(dicomweb_server):
    ds = _store(dicomweb_server, "CT_small.dcm")
    client = dicomweb_server.client()
    jpeg = client.retrieve_instance_rendered(*_uids(ds))
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    png = client.retrieve_instance_rendered(
        *_uids(ds), media_types=("image/png",), params={"viewport": "64,64"}
    )
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    series = client.retrieve_series_rendered(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert Image.open(io.BytesIO(series)).size == (128, 128)
    frame = client.retrieve_instance_frames_rendered(
        *_uids(ds), frame_numbers=[1], media_types=("image/png",)
    )
    assert Image.open(io.BytesIO(frame)).format == "PNG"
    thumbnail = requests.get(
        f"{dicomweb_server.url}/studies/{ds.StudyInstanceUID}/thumbnail",
        headers={"Authorization": f"Token {dicomweb_server.token}"},
        timeout=30,
    )
    assert thumbnail.headers["Content-Type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 128


def test_another_user_gets_404_and_staff_without_the_patient_data_permission_403(dicomweb_server):
    ds = _store(dicomweb_server, "CT_small.dcm")
    for token, status in ((dicomweb_server.other_token, 404), (dicomweb_server.staff_token, 403)):
        client = dicomweb_server.client(token)
        for method, args, kwargs in (
            (client.retrieve_instance, _uids(ds), {}),
            (client.retrieve_series_metadata, _uids(ds)[:2], {}),
            (client.retrieve_instance_frames, _uids(ds), {"frame_numbers": [1]}),
            (client.retrieve_instance_rendered, _uids(ds), {}),
        ):
            with pytest.raises(requests.HTTPError) as refused:
                method(*args, **kwargs)
            assert refused.value.response.status_code == status
            assert set(refused.value.response.json()) == {"detail"}


def test_two_accept_headers_are_read_together_over_the_wire(dicomweb_server):
    ds = _store(dicomweb_server, "JPEG2000.dcm")
    path = "/dicomweb/studies/{}/series/{}/instances/{}/frames/1".format(*_uids(ds))
    conn = http.client.HTTPConnection("127.0.0.1", dicomweb_server.port, timeout=30)
    conn.putrequest("GET", path)
    conn.putheader("Authorization", f"Token {dicomweb_server.token}")
    conn.putheader("Accept", 'multipart/related; type="image/jpeg"')  # not this syntax
    conn.putheader("Accept", 'multipart/related; type="image/jp2"; q=0.5')
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body
    assert response.getheader("Content-Type").startswith('multipart/related; type="image/jp2"; boundary=')
    assert get_frame(ds.PixelData, 0, number_of_frames=1) in body
