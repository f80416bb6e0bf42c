"""WADO-RS through DRF's test client: negotiation edge cases, status codes, multipart framing, frames,
bulk data, rendered images and who may see what. The live-server tests with dicomweb-client are
in test_wado_client.py."""

from __future__ import annotations

import io
import json
import re
from email.parser import BytesParser

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import get_frame
from pydicom.uid import generate_uid

from audit.models import AuditLog
from dicom.models import DicomFile
from dicomweb.media import Offer, negotiate, parse_accept

pytestmark = pytest.mark.django_db

CT = "CT_small.dcm"
J2K = "JPEG2000.dcm"
JPEG_LOSSY = "JPEG-lossy.dcm"  # 12-bit JPEG Extended: no installed plugin decodes it
MULTIFRAME_NATIVE = "rtdose.dcm"  # 15 frames, Implicit VR LE
MULTIFRAME_RLE = "SC_rgb_rle_2frame.dcm"  # 2 RGB frames, RLE Lossless
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def _store(client, name: str, *, fresh: bool = True, anonymize: bool = False) -> DicomFile:
    """Upload a pydicom test file through the REST API (raw body); fresh UIDs so tests do not share."""
    ds = dcmread(get_testdata_file(name))
    if fresh:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    query = "?anonymize=true" if anonymize else ""
    response = client.post(
        f"/api/dicom/upload{query}", data=buffer.getvalue(), content_type="application/dicom"
    )
    assert response.status_code == 200, response.content
    return DicomFile.objects.get(id=response.json()["file_id"])


def _url(f: DicomFile, level: str = "instance") -> str:
    url = f"/dicomweb/studies/{f.study_instance_uid}"
    if level in ("series", "instance"):
        url += f"/series/{f.series_instance_uid}"
    if level == "instance":
        url += f"/instances/{f.sop_instance_uid}"
    return url


def _body(response) -> bytes:
    """The whole body (a streamed one is read once and kept)."""
    if not hasattr(response, "_read_body"):
        response._read_body = b"".join(response.streaming_content) if response.streaming else response.content
    return response._read_body


def _parts(response) -> list[tuple[str, bytes]]:
    """Split a multipart/related response with the standard library's MIME parser: (Content-Type, body)."""
    head = f"Content-Type: {response['Content-Type']}\r\n\r\n".encode()
    message = BytesParser().parsebytes(head + _body(response))
    assert message.is_multipart(), response["Content-Type"]
    return [(part["Content-Type"], part.get_payload(decode=True)) for part in message.get_payload()]


# --- Accept negotiation (dicomweb.media) --------------------------------------------------------


def test_parse_accept_reads_quoted_and_unquoted_types_q_values_and_skips_garbage():
    ranges = parse_accept(
        'multipart/related; type="application/dicom"; transfer-syntax=*, '
        "multipart/related;type=application/octet-stream;q=0.5, nonsense, image/png;q=2, */*;q=0.1"
    )
    assert [(r.media_type, r.params, r.q) for r in ranges] == [
        ("multipart/related", {"type": "application/dicom", "transfer-syntax": "*"}, 1.0),
        ("multipart/related", {"type": "application/octet-stream"}, 0.5),
        ("*/*", {}, 0.1),
    ]
    assert [r.media_type for r in parse_accept(None)] == ["*/*"]


def test_negotiate_orders_by_q_then_header_order_and_honours_q_zero():
    offers = [Offer("multipart/related", "image/jp2"), Offer("multipart/related", "application/octet-stream")]
    header = 'multipart/related; type="image/jp2"; q=0.4, multipart/related; type=application/octet-stream'
    assert [m.offer.part_type for m in negotiate(header, offers)] == ["application/octet-stream", "image/jp2"]
    refused = negotiate(["*/*", "multipart/related; type=image/jp2; q=0"], offers)
    assert [m.offer.part_type for m in refused] == ["application/octet-stream"]
    # multipart/related without a type is the resource's default (its first multipart offer).
    assert [m.offer.part_type for m in negotiate("multipart/related", offers)] == ["image/jp2"]
    assert [m.offer.part_type for m in negotiate('multipart/related; type="image/*"', offers)] == [
        "image/jp2"
    ]
    assert negotiate("application/json", offers) == []


# --- Retrieve -------------------------------------------------------------------------------------


def test_an_instance_is_a_multipart_of_its_stored_part10_file_with_its_syntax(api, user):
    f = _store(api, CT)
    response = api.get(_url(f), HTTP_ACCEPT=DICOM_MULTIPART)
    assert response.status_code == 200
    assert response["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    body = _body(response)
    assert int(response["Content-Length"]) == len(body)
    [(content_type, payload)] = _parts(response)
    assert content_type == f"application/dicom; transfer-syntax={f.transfer_syntax_uid}"
    with open(f"{_storage_path(f)}", "rb") as stored:
        assert payload == stored.read()
    row = AuditLog.objects.filter(action=AuditLog.Action.DOWNLOAD).latest("id")
    assert f"instance:{f.sop_instance_uid}" in row.targets


def _storage_path(f: DicomFile):
    from dicom.services.storage import local_path

    return local_path(f.storage_key)


def test_a_series_and_a_study_hold_every_instance_once_and_accept_many_header_spellings(api):
    first = _store(api, CT)
    ds = dcmread(get_testdata_file(CT))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = first.study_instance_uid, first.series_instance_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    api.post("/api/dicom/upload", data=buffer.getvalue(), content_type="application/dicom")
    for accept in (
        DICOM_MULTIPART,
        "multipart/related; type=application/dicom",
        "multipart/related",
        "*/*",
        'multipart/related; type="application/dicom"; transfer-syntax=*',
        'image/png, multipart/related; type="application/dicom"; q=0.9',
    ):
        for level in ("series", "study"):
            response = api.get(_url(first, level), HTTP_ACCEPT=accept)
            assert response.status_code == 200, (accept, response.content)
            uids = {dcmread(io.BytesIO(payload)).SOPInstanceUID for _, payload in _parts(response)}
            assert uids == {first.sop_instance_uid, ds.SOPInstanceUID}


def test_explicit_vr_little_endian_is_produced_from_compressed_and_implicit_instances(api):
    for name in (J2K, "MR_small_implicit.dcm"):
        f = _store(api, name)
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
        response = api.get(_url(f), HTTP_ACCEPT=accept)
        assert response.status_code == 200, response.content
        [(content_type, payload)] = _parts(response)
        assert content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        ds = dcmread(io.BytesIO(payload))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.SOPInstanceUID == f.sop_instance_uid
        original = dcmread(get_testdata_file(name))
        assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_a_syntax_that_cannot_be_produced_is_a_406_with_a_detail(api):
    f = _store(api, CT)
    jpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    for accept in (jpeg, "application/json", "image/jpeg"):
        response = api.get(_url(f), HTTP_ACCEPT=accept)
        assert response.status_code == 406, accept
        assert set(response.json()) == {"detail"}
    lossy = _store(api, JPEG_LOSSY)
    explicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    response = api.get(_url(lossy), HTTP_ACCEPT=explicit)
    assert response.status_code == 406 and set(response.json()) == {"detail"}


def test_unknown_uids_are_404_and_another_users_instance_is_the_same_404(api, other_api):
    f = _store(api, CT)
    for url in (
        "/dicomweb/studies/1.2.3",
        f"/dicomweb/studies/{f.study_instance_uid}/series/1.2.3",
        f"{_url(f, 'series')}/instances/1.2.3",
        f"{_url(f, 'series')}/instances/1.2.3/metadata",
        f"{_url(f, 'series')}/instances/1.2.3/frames/1",
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert set(response.json()) == {"detail"}
    for suffix in ("", "/metadata", "/frames/1", "/rendered", "/bulkdata/7FE00010"):
        response = other_api.get(_url(f) + suffix)
        assert response.status_code == 404, suffix
        assert set(response.json()) == {"detail"}


def test_other_methods_are_405_with_allow(api):
    f = _store(api, CT)
    response = api.delete(_url(f))
    assert response.status_code == 405
    assert "GET" in response["Allow"] and set(response.json()) == {"detail"}


def test_staff_without_the_patient_data_permission_get_403_for_originals_and_the_copy_for_deidentified(
    api, staff_api
):
    original = _store(api, CT)
    for suffix in ("", "/metadata", "/frames/1", "/rendered", "/thumbnail", "/bulkdata/7FE00010"):
        response = staff_api.get(_url(original) + suffix)
        assert response.status_code == 403, suffix
        assert set(response.json()) == {"detail"}
    response = staff_api.get(_url(original, "study") + "/metadata")
    assert response.status_code == 403
    copy = _store(api, CT, anonymize=True)
    response = staff_api.get(_url(copy) + "/metadata")
    assert response.status_code == 200, response.content
    assert response.json()[0]["00100010"] != {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}


# --- Metadata -------------------------------------------------------------------------------------


def test_metadata_is_dicom_json_with_absolute_bulk_data_uris_that_follow_the_proxy(api):
    f = _store(api, CT)
    headers = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "pacs.example.org"}
    for level in ("instance", "series", "study"):
        response = api.get(_url(f, level) + "/metadata", HTTP_ACCEPT="application/dicom+json", **headers)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/dicom+json"
        [instance] = response.json()
        assert instance["00080018"] == {"vr": "UI", "Value": [f.sop_instance_uid]}
        assert instance["00280010"] == {"vr": "US", "Value": [128]}
        assert instance["00083002"] == {"vr": "UI", "Value": [f.transfer_syntax_uid]}
        pixel_uri = instance["7FE00010"]["BulkDataURI"]
        root = "https://pacs.example.org/dicomweb"
        assert pixel_uri == f"{root}{_url(f)[len('/dicomweb') :]}/bulkdata/7FE00010"
        assert "Value" not in instance["7FE00010"] and "InlineBinary" not in instance["7FE00010"]
        assert not any(key.startswith("0002") for key in instance)
    row = AuditLog.objects.filter(action=AuditLog.Action.METADATA).latest("id")
    assert f"study:{f.study_instance_uid}" in row.targets


def test_metadata_accepts_json_and_refuses_what_it_cannot_answer(api):
    f = _store(api, CT)
    assert api.get(_url(f) + "/metadata", HTTP_ACCEPT="application/json").status_code == 200
    assert api.get(_url(f) + "/metadata", HTTP_ACCEPT="*/*").status_code == 200
    response = api.get(_url(f) + "/metadata", HTTP_ACCEPT="application/dicom+xml")
    assert response.status_code == 406 and set(response.json()) == {"detail"}


# --- Bulk data ------------------------------------------------------------------------------------


def test_every_bulk_data_uri_of_the_metadata_answers_the_elements_bytes(api):
    f = _store(api, "examples_overlay.dcm")
    [instance] = api.get(_url(f) + "/metadata").json()
    uris = re.findall(r'"BulkDataURI": ?"([^"]+)"', json.dumps(instance))
    assert len(uris) >= 3  # a private OB, an overlay in a sequence item, the overlay and the pixel data
    ds = dcmread(get_testdata_file("examples_overlay.dcm"))
    for uri in uris:
        path = uri.split("/bulkdata/")[1]
        response = api.get(uri.replace("http://testserver", ""), HTTP_ACCEPT="multipart/related; type=*/*")
        assert response.status_code == 200, (path, response.content)
        [(content_type, payload)] = _parts(response)
        assert content_type.startswith("application/octet-stream")
        element = ds
        pieces = path.split("/")
        for tag, index in zip(pieces[:-1:2], pieces[1:-1:2], strict=True):
            element = element[int(tag, 16)].value[int(index)]
        assert payload == element[int(pieces[-1], 16)].value, path


def test_a_bulk_data_path_that_is_not_one_is_404(api):
    f = _store(api, CT)
    for path in ("nonsense", "00100010/x", "00540016/0/00181074", "00431029/0/00100010"):
        response = api.get(f"{_url(f)}/bulkdata/{path}")
        assert response.status_code == 404, path
        assert set(response.json()) == {"detail"}


# --- Frames ---------------------------------------------------------------------------------------


def test_native_frames_are_their_raw_little_endian_bytes_in_the_order_asked(api):
    f = _store(api, MULTIFRAME_NATIVE)
    response = api.get(
        f"{_url(f)}/frames/3,1", HTTP_ACCEPT="multipart/related; type=application/octet-stream"
    )
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith('multipart/related; type="application/octet-stream"')
    parts = _parts(response)
    assert [ct for ct, _ in parts] == ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"] * 2
    array = dcmread(get_testdata_file(MULTIFRAME_NATIVE)).pixel_array
    assert parts[0][1] == array[2].astype(array.dtype.newbyteorder("<")).tobytes()
    assert parts[1][1] == array[0].astype(array.dtype.newbyteorder("<")).tobytes()


def test_encapsulated_frames_are_the_codec_stream_as_stored_or_decoded_when_asked(api):
    f = _store(api, J2K)
    stored = dcmread(get_testdata_file(J2K))
    codec = get_frame(stored.PixelData, 0, number_of_frames=1)
    for accept in (
        'multipart/related; type="image/jp2"',
        "multipart/related; type=application/octet-stream; transfer-syntax=*",
        None,
        'multipart/related; type="*/*"',
    ):
        extra = {"HTTP_ACCEPT": accept} if accept else {}
        response = api.get(f"{_url(f)}/frames/1", **extra)
        assert response.status_code == 200, (accept, response.content)
        [(content_type, payload)] = _parts(response)
        assert content_type.endswith(f"; transfer-syntax={f.transfer_syntax_uid}"), accept
        assert payload == codec
    response = api.get(f"{_url(f)}/frames/1", HTTP_ACCEPT="multipart/related; type=application/octet-stream")
    [(content_type, payload)] = _parts(response)
    assert content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert payload == stored.pixel_array.astype(stored.pixel_array.dtype.newbyteorder("<")).tobytes()


def test_frames_of_a_multi_frame_rle_instance_and_an_undecodable_one(api):
    f = _store(api, MULTIFRAME_RLE)
    response = api.get(f"{_url(f)}/frames/2", HTTP_ACCEPT='multipart/related; type="image/dicom-rle"')
    [(content_type, payload)] = _parts(response)
    stored = dcmread(get_testdata_file(MULTIFRAME_RLE))
    assert content_type == "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    assert payload == get_frame(stored.PixelData, 1, number_of_frames=2)
    lossy = _store(api, JPEG_LOSSY)
    response = api.get(
        f"{_url(lossy)}/frames/1", HTTP_ACCEPT="multipart/related; type=application/octet-stream"
    )
    assert response.status_code == 406 and set(response.json()) == {"detail"}
    response = api.get(f"{_url(lossy)}/frames/1", HTTP_ACCEPT='multipart/related; type="image/jpeg"')
    assert response.status_code == 200
    assert _parts(response)[0][0] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.51"


def test_a_bad_frame_list_is_400_and_a_frame_out_of_range_is_404(api):
    f = _store(api, CT)
    for frames in ("0", "a", "1,,2", "-1", "1.5"):
        response = api.get(f"{_url(f)}/frames/{frames}")
        assert response.status_code == 400, frames
        assert set(response.json()) == {"detail"}
    response = api.get(f"{_url(f)}/frames/1,2")
    assert response.status_code == 404 and set(response.json()) == {"detail"}
    response = api.get(f"{_url(f)}/frames/1", HTTP_ACCEPT='multipart/related; type="image/jp2"')
    assert response.status_code == 406


# --- Rendered -------------------------------------------------------------------------------------


def test_rendered_is_a_jpeg_by_default_and_png_when_asked_at_every_level(api):
    f = _store(api, CT)
    for suffix in ("/rendered", "/frames/1/rendered"):
        response = api.get(_url(f) + suffix)
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(response.content)).format == "JPEG"
    for level in ("series", "study"):
        response = api.get(_url(f, level) + "/rendered", HTTP_ACCEPT="image/png")
        assert response["Content-Type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG" and image.size == (128, 128)
    row = AuditLog.objects.filter(action=AuditLog.Action.VIEW).latest("id")
    assert f"instance:{f.sop_instance_uid}" in row.targets


def test_rendered_applies_viewport_window_and_quality_and_thumbnails_are_small(api):
    f = _store(api, CT)
    small = api.get(_url(f) + "/rendered?viewport=64,32", HTTP_ACCEPT="image/png")
    assert Image.open(io.BytesIO(small.content)).size == (32, 32)
    narrow = api.get(_url(f) + "/rendered?window=0,1", HTTP_ACCEPT="image/png")
    wide = api.get(_url(f) + "/rendered?window=1000,4000,linear", HTTP_ACCEPT="image/png")
    narrow_pixels = np.asarray(Image.open(io.BytesIO(narrow.content)))
    assert set(np.unique(narrow_pixels)) <= {0, 255}
    assert len(np.unique(np.asarray(Image.open(io.BytesIO(wide.content))))) > 2
    low = api.get(_url(f) + "/rendered?quality=5")
    high = api.get(_url(f) + "/rendered?quality=100")
    assert len(low.content) < len(high.content)
    thumbnail = api.get(_url(f, "series") + "/thumbnail")
    assert thumbnail["Content-Type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 128


def test_rendered_refuses_bad_parameters_frames_and_media_types(api):
    f = _store(api, MULTIFRAME_NATIVE)
    for query in ("quality=0", "quality=x", "viewport=10", "viewport=0,5", "window=1", "window=1,2,cubic"):
        response = api.get(f"{_url(f)}/rendered?{query}")
        assert response.status_code == 400, query
        assert set(response.json()) == {"detail"}
    assert api.get(f"{_url(f)}/frames/1,2/rendered").status_code == 400
    response = api.get(f"{_url(f)}/frames/99/rendered")
    assert response.status_code == 404 and set(response.json()) == {"detail"}
    response = api.get(f"{_url(f)}/frames/15/rendered", HTTP_ACCEPT="image/png")
    assert response.status_code == 200
    response = api.get(f"{_url(f)}/rendered", HTTP_ACCEPT="image/gif")
    assert response.status_code == 406 and set(response.json()) == {"detail"}


def test_multipart_framing_opens_each_part_with_the_boundary_and_closes_the_message():
    from dicomweb.media import Part, multipart, multipart_content_type, new_boundary

    boundary = new_boundary()
    body = b"".join(multipart([Part("a/b", [b"one", b"two"]), Part("c/d", [b"\r\n--x"])], boundary))
    assert (
        body
        == (
            f"--{boundary}\r\nContent-Type: a/b\r\n\r\nonetwo\r\n"
            f"--{boundary}\r\nContent-Type: c/d\r\n\r\n\r\n--x\r\n--{boundary}--\r\n"
        ).encode()
    )
    assert multipart_content_type("a/b", boundary) == f'multipart/related; type="a/b"; boundary={boundary}'
    assert new_boundary() != boundary


def test_cached_metadata_follows_each_requests_own_service_root(api):
    f = _store(api, CT, anonymize=True)  # only de-identified files' metadata is kept in memory
    plain = api.get(_url(f) + "/metadata").json()[0]["7FE00010"]["BulkDataURI"]
    proxied = api.get(
        _url(f) + "/metadata", HTTP_X_FORWARDED_PROTO="https", HTTP_X_FORWARDED_HOST="viewer.example.org"
    ).json()[0]["7FE00010"]["BulkDataURI"]
    assert plain.startswith("http://testserver/dicomweb/studies/")
    assert proxied == plain.replace("http://testserver/", "https://viewer.example.org/")


def test_no_originals_header_is_kept_in_memory_after_its_request(api):
    from dicomweb import wado

    original, copy = _store(api, CT), _store(api, CT, anonymize=True)
    for f in (original, copy):
        assert api.get(_url(f) + "/metadata").status_code == 200
    kept = set(wado._metadata_cache._entries)
    assert f"{copy.id}:{copy.storage_key}" in kept
    assert not any(key.startswith(str(original.id)) for key in kept)


def test_large_metadata_is_gzipped_for_clients_that_accept_it(api):
    import gzip

    f = _store(api, CT)
    plain = api.get(_url(f, "series") + "/metadata")
    assert "Content-Encoding" not in plain and "Accept-Encoding" in plain["Vary"]
    zipped = api.get(_url(f, "series") + "/metadata", HTTP_ACCEPT_ENCODING="br, gzip;q=0.8")
    assert zipped["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.content) == plain.content
    refused = api.get(_url(f, "series") + "/metadata", HTTP_ACCEPT_ENCODING="gzip;q=0")
    assert "Content-Encoding" not in refused


def test_staff_with_the_patient_data_permission_get_originals_and_refusals_are_audited(
    api, staff_api, staff_user
):
    from django.contrib.auth.models import Permission

    from dicom.api.authentication import clear_token_cache

    original = _store(api, CT)
    refused = staff_api.get(_url(original) + "/metadata")
    assert refused.status_code == 403
    row = AuditLog.objects.filter(action=AuditLog.Action.METADATA).latest("id")
    assert (row.success, row.status_code) == (False, 403)
    staff_user.user_permissions.add(
        Permission.objects.get(codename="view_phi", content_type__app_label="dicom")
    )
    clear_token_cache()  # the API keeps a token's user (and its permissions) for a while
    for suffix, accept in (
        ("", DICOM_MULTIPART),
        ("/metadata", "application/dicom+json"),
        ("/rendered", "*/*"),
    ):
        response = staff_api.get(_url(original) + suffix, HTTP_ACCEPT=accept)
        assert response.status_code == 200, (suffix, response.content)
    row = AuditLog.objects.filter(action=AuditLog.Action.VIEW).latest("id")
    assert row.success and f"instance:{original.sop_instance_uid}" in row.targets


def test_a_colour_frame_renders_as_rgb_and_a_window_leaves_it_alone(api):
    f = _store(api, MULTIFRAME_RLE)
    response = api.get(f"{_url(f)}/frames/2/rendered?window=0,1", HTTP_ACCEPT="image/png")
    assert response.status_code == 200, response.content
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "RGB"
    expected = dcmread(get_testdata_file(MULTIFRAME_RLE)).pixel_array[1]
    assert np.array_equal(np.asarray(image), expected)


def test_frames_of_a_multi_frame_instance_asked_one_by_one_are_each_right(api):
    f = _store(api, MULTIFRAME_NATIVE)
    array = dcmread(get_testdata_file(MULTIFRAME_NATIVE)).pixel_array
    for number in (5, 1, 15, 5):  # the header is read once, then kept
        response = api.get(
            f"{_url(f)}/frames/{number}", HTTP_ACCEPT="multipart/related; type=application/octet-stream"
        )
        [(_, payload)] = _parts(response)
        assert payload == array[number - 1].astype(array.dtype.newbyteorder("<")).tobytes()
    response = api.get(f"{_url(f)}/frames/16")
    assert response.status_code == 404
