import hashlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from audit.models import AuditLog
from audit.services import flush_tallies
from dicom.models import DicomFile
from dicom.services import storage
from dicom.tests.services import dicom_builders
from dicom.tests.services.dicom_builders import TEXT_CASES, build_text_case

pytestmark = pytest.mark.django_db

CT_SMALL = get_testdata_file("CT_small.dcm")


def stored_files(root: Path) -> list[Path]:
    """Every file under storage, the staging area included (it must be empty between requests)."""
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def upload(client, path, **fields):
    with open(path, "rb") as handle:
        return client.post("/api/dicom/upload", {"file": handle, **fields}, format="multipart")


def test_upload_stores_the_file_and_answers_the_documented_shape(api, user, storage_root):
    response = upload(api, CT_SMALL, study_type="ct")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"message", "file_id", "metadata", "status"}
    assert body["message"] == "DICOM file processed successfully"
    assert body["status"] == "completed"
    metadata = body["metadata"]
    assert metadata["file_id"] == body["file_id"]
    assert metadata["modality"] == "CT"
    assert metadata["study_type"] == "ct"
    assert metadata["anonymized"] is False
    assert metadata["patient_name"] == "CompressedSamples^CT1"
    assert metadata["study_date"] == "2004-01-19"
    assert metadata["rows"] == 128 and metadata["columns"] == 128
    assert metadata["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"

    dicom_file = DicomFile.objects.get(pk=body["file_id"])
    assert dicom_file.owner == user
    original = Path(CT_SMALL).read_bytes()
    stored = (storage_root / dicom_file.storage_key).read_bytes()
    # Byte for byte after a zeroed preamble, and the recorded hash is the stored file's.
    assert stored[:128] == bytes(128)
    assert stored[128:] == original[128:]
    assert dicom_file.sha256 == hashlib.sha256(stored).hexdigest()
    assert dicom_file.size == len(original)
    # The key is made by the service from the id, never from the client's filename.
    assert dicom_file.storage_key == f"dicom/{body['file_id'][:2]}/{body['file_id']}.dcm"
    assert stored_files(storage_root) == [storage_root / dicom_file.storage_key]


def test_upload_answers_with_a_trailing_slash_too(api):
    with open(CT_SMALL, "rb") as handle:
        response = api.post("/api/dicom/upload/", {"file": handle}, format="multipart")
    assert response.status_code == 200
    assert response.json()["metadata"]["study_type"] == "general"


def test_upload_metadata_is_the_metadata_endpoints_object(api):
    body = upload(api, CT_SMALL).json()
    response = api.get(f"/api/dicom/metadata/{body['file_id']}")
    assert response.status_code == 200
    assert response.json() == body["metadata"]


def test_upload_with_anonymize_stores_no_original_patient_data(api, storage_root):
    original = dcmread(CT_SMALL)
    identifying = [
        str(original.PatientName).encode(),
        original.PatientID.encode(),
        original.StudyInstanceUID.encode(),
        original.SOPInstanceUID.encode(),
    ]

    response = upload(api, CT_SMALL, anonymize="true")

    assert response.status_code == 200
    metadata = response.json()["metadata"]
    assert metadata["anonymized"] is True
    assert metadata["patient_name"] != str(original.PatientName)
    assert metadata["patient_id"] != original.PatientID
    assert metadata["study_instance_uid"].startswith("2.25.")
    files = stored_files(storage_root)
    assert len(files) == 1
    content = files[0].read_bytes()
    for value in identifying:
        assert value not in content
    dataset = dcmread(files[0])
    assert dataset.PatientIdentityRemoved == "YES"
    assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
    row = DicomFile.objects.get()
    assert original.PatientID not in str(row.metadata)
    assert row.anonymized is True and row.deid_report["options"] == []


def test_two_uploads_of_one_study_share_the_new_study_uid(api):
    first = upload(api, CT_SMALL, anonymize="1").json()["metadata"]
    second = upload(api, CT_SMALL, anonymize="1").json()["metadata"]
    assert first["study_instance_uid"] == second["study_instance_uid"]
    assert first["series_instance_uid"] == second["series_instance_uid"]
    assert first["file_id"] != second["file_id"]


def test_upload_with_a_deid_option_applies_it(api):
    response = upload(api, CT_SMALL, anonymize="true", retain_full_dates="true")
    assert response.status_code == 200
    assert response.json()["metadata"]["study_date"] == "2004-01-19"
    assert DicomFile.objects.get().deid_options == ["retain_full_dates"]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"anonymize": "yes"}, "anonymize"),
        ({"anonymize": "maybe"}, "anonymize"),
        ({"study_type": "CT Scan"}, "study_type"),
        ({"study_type": "x" * 40}, "study_type"),
        ({"retain_full_dates": "sure"}, "retain_full_dates"),
        (
            {"anonymize": "true", "retain_full_dates": "true", "retain_modified_dates": "true"},
            "retain",
        ),
    ],
)
def test_upload_rejects_bad_fields_with_a_string_detail(api, storage_root, fields, fragment):
    response = upload(api, CT_SMALL, **fields)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail
    assert DicomFile.objects.count() == 0
    assert stored_files(storage_root) == []


def test_upload_without_a_file_is_a_400(api):
    response = api.post("/api/dicom/upload", {"study_type": "ct"}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["detail"]


def _bad_input(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.dcm"
    if kind == "not-dicom":
        path.write_text("Patient: not a DICOM file at all\n" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "preamble-only":
        path.write_bytes(bytes(128))
    elif kind == "preamble-and-prefix":
        path.write_bytes(bytes(128) + b"DICM")
    elif kind == "truncated-mr":
        path = Path(get_testdata_file("MR_truncated.dcm"))
    elif kind == "truncated-rtplan":
        path = Path(get_testdata_file("rtplan_truncated.dcm"))
    elif kind == "cut-in-pixel-data":
        dicom_builders.truncate_copy(CT_SMALL, path, Path(CT_SMALL).stat().st_size - 1000)
    elif kind == "cut-at-a-third":
        dicom_builders.truncate_copy(CT_SMALL, path, Path(CT_SMALL).stat().st_size // 3)
    elif kind == "deep-nesting":
        dicom_builders.write_deeply_nested(path, 5000)
    elif kind == "deflate-bomb":
        dicom_builders.write_deflate_bomb(path, 600 * 1024 * 1024)
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "not-dicom",
        "empty",
        "preamble-only",
        "preamble-and-prefix",
        "truncated-mr",
        "truncated-rtplan",
        "cut-in-pixel-data",
        "cut-at-a-third",
        "deep-nesting",
        "deflate-bomb",
    ],
)
@pytest.mark.parametrize("anonymize", ["false", "true"])
def test_bad_dicom_is_a_400_and_leaves_nothing_behind(api, user, storage_root, tmp_path, kind, anonymize):
    response = upload(api, _bad_input(kind, tmp_path), anonymize=anonymize)

    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert DicomFile.objects.count() == 0
    assert stored_files(storage_root) == []
    audit = AuditLog.objects.get()
    assert (audit.action, audit.success, audit.user, audit.status_code) == ("upload", False, user, 400)
    assert audit.reason == detail[:255]


def test_upload_over_the_size_limit_is_a_413(api, settings, storage_root):
    settings.DICOM_MAX_UPLOAD_SIZE = 10_000
    response = upload(api, CT_SMALL)
    assert response.status_code == 413
    assert "10000 bytes" in response.json()["detail"]
    assert DicomFile.objects.count() == 0
    assert stored_files(storage_root) == []


def test_burned_in_annotation_is_refused_unless_accepted(api, tmp_path):
    dataset = dcmread(CT_SMALL)
    dataset.BurnedInAnnotation = "YES"
    path = tmp_path / "burned.dcm"
    dataset.save_as(path, enforce_file_format=True)

    refused = upload(api, path, anonymize="true")
    accepted = upload(api, path, anonymize="true", accept_burned_in_annotation="true")

    assert refused.status_code == 400
    assert "burned" in refused.json()["detail"].lower()
    assert accepted.status_code == 200
    assert DicomFile.objects.count() == 1


def test_upload_requires_credentials(client, storage_root):
    with open(CT_SMALL, "rb") as handle:
        response = client.post("/api/dicom/upload", {"file": handle})
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}
    assert response.headers["WWW-Authenticate"].startswith("Token")
    assert DicomFile.objects.count() == 0
    assert stored_files(storage_root) == []
    # Unauthenticated: tallied for the minute, written as one row with its count once it is over.
    assert not AuditLog.objects.exists()
    flush_tallies(everything=True)
    audit = AuditLog.objects.get()
    assert (audit.action, audit.success, audit.status_code, audit.user) == ("upload", False, 401, None)
    assert audit.count == 1


def test_a_wrong_token_is_a_401(client):
    response = client.get(
        "/api/dicom/status/00000000-0000-0000-0000-000000000000", HTTP_AUTHORIZATION="Token not-a-real-key"
    )
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}


def test_a_deactivated_users_token_is_a_401_audited_against_that_user(api, user):
    user.is_active = False
    user.save()
    response = api.get("/api/dicom/status/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}
    audit = AuditLog.objects.get()
    assert (audit.action, audit.success, audit.status_code, audit.user) == ("status", False, 401, user)


def _with_vr_bytes(tmp_path: Path, tag: bytes, vr: bytes) -> Path:
    """CT_small with the VR of one explicit-VR element overwritten (a corrupt, not a cut, file)."""
    data = bytearray(Path(CT_SMALL).read_bytes())
    position = data.index(tag, 132)
    data[position + 4 : position + 6] = vr
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("tag", "vr"),
    [
        (b"\x10\x00\x30\x00", b"Di"),  # PatientBirthDate with a VR that does not exist
        (b"\x08\x00\x60\x00", b"\xf4\x01"),  # Modality with bytes that are no VR at all
    ],
)
@pytest.mark.parametrize("anonymize", ["false", "true"])
def test_corrupt_value_representations_are_a_400_not_a_500(api, storage_root, tmp_path, tag, vr, anonymize):
    response = upload(api, _with_vr_bytes(tmp_path, tag, vr), anonymize=anonymize)
    assert response.status_code == 400, response.content
    assert isinstance(response.json()["detail"], str)
    assert DicomFile.objects.count() == 0
    assert stored_files(storage_root) == []


def test_a_file_pydicom_cannot_write_back_is_refused_on_anonymize_not_a_500(api, storage_root):
    # Neither its file meta nor its dataset names a SOP Class or Instance UID, which a written file
    # must carry: refused with that reason.
    response = upload(api, get_testdata_file("empty_charset_LEI.dcm"), anonymize="true")
    assert response.status_code == 400, response.content
    assert "no SOP Class UID (0008,0016)" in response.json()["detail"]
    assert stored_files(storage_root) == []


def _text_file(tmp_path, name="ct-white-top"):
    case = next(case for case in TEXT_CASES if case.name == name)
    return build_text_case(case, tmp_path / f"{name}.dcm")


def test_burned_in_text_found_in_the_pixels_is_refused_with_where_and_nothing_left(
    api, tmp_path, storage_root
):
    path = _text_file(tmp_path)  # Burned In Annotation absent: only the scan can tell

    refused = upload(api, path, anonymize="true")

    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert set(refused.json()) == {"detail"}
    assert "burned-in text was found in the pixel data; resend with clean_pixel_data" in detail
    assert "Text at frame 1 at x=" in detail
    assert "clean_pixel_data" in detail and "DOE" not in detail and "4471823" not in detail
    assert DicomFile.objects.count() == 0
    assert not [p for p in storage_root.rglob("*") if p.is_file()]
    failure = AuditLog.objects.get(action="upload")
    assert failure.success is False and "DOE" not in failure.reason


def test_clean_pixel_data_on_upload_stores_the_cleaned_image(api, tmp_path, storage_root):
    path = _text_file(tmp_path)

    response = upload(api, path, anonymize="true", clean_pixel_data="true")

    assert response.status_code == 200, response.json()
    stored = DicomFile.objects.get(pk=response.json()["file_id"])
    assert stored.deid_options == ["clean_pixel_data"]
    assert stored.deid_report["pixel_text"]["cleaned"] is True
    assert stored.deid_report["pixel_text"]["text_regions"]
    output = dcmread(storage.local_path(stored.storage_key))
    assert output.BurnedInAnnotation == "NO" and output.PatientIdentityRemoved == "YES"


def test_clean_pixel_data_is_a_strict_boolean_and_excludes_accept(api, tmp_path):
    assert upload(api, CT_SMALL, anonymize="true", clean_pixel_data="maybe").status_code == 400
    both = upload(api, CT_SMALL, anonymize="true", clean_pixel_data="true", accept_burned_in_annotation="1")
    assert both.status_code == 400
    assert "alternatives" in both.json()["detail"]
    assert DicomFile.objects.count() == 0


def test_clean_pixel_data_as_the_default_and_a_request_that_accepts_instead(api, tmp_path, settings):
    settings.DICOM_DEID_DEFAULT_OPTIONS = ["clean_pixel_data"]
    path = _text_file(tmp_path)

    cleaned = upload(api, path, anonymize="true")
    accepted = upload(api, path, anonymize="true", accept_burned_in_annotation="true")

    assert cleaned.status_code == 200 and accepted.status_code == 200, (cleaned.json(), accepted.json())
    by_id = {str(f.id): f for f in DicomFile.objects.all()}
    assert by_id[cleaned.json()["file_id"]].deid_options == ["clean_pixel_data"]
    assert by_id[accepted.json()["file_id"]].deid_options == ["accept_burned_in_annotation"]
    kept = dcmread(storage.local_path(by_id[accepted.json()["file_id"]].storage_key))
    assert kept.PatientIdentityRemoved == "NO"


def test_an_empty_boolean_is_a_400_not_false(api, storage_root):
    response = upload(api, CT_SMALL, anonymize="")
    assert response.status_code == 400
    assert "anonymize" in response.json()["detail"] and "true, false" in response.json()["detail"]
    assert DicomFile.objects.count() == 0


def test_a_field_sent_twice_is_a_400(api, storage_root):
    with open(CT_SMALL, "rb") as handle:
        response = api.post(
            "/api/dicom/upload",
            {"file": handle, "anonymize": ["true", "false"]},
            format="multipart",
        )
    assert response.status_code == 400
    assert response.json()["detail"] == "field(s) sent more than once: anonymize"
    assert DicomFile.objects.count() == 0


def test_an_unknown_option_is_a_400_that_lists_the_known_ones(api, storage_root):
    response = upload(api, CT_SMALL, anonymize="true", retain_everything="true")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("unknown field(s) retain_everything; known:")
    assert "clean_pixel_data" in detail and "retain_uids" in detail
    assert DicomFile.objects.count() == 0


def test_options_and_head_are_not_audited_as_reads(api, user):
    file_id = upload(api, CT_SMALL).json()["file_id"]
    before = AuditLog.objects.count()
    assert api.options(f"/api/dicom/metadata/{file_id}").status_code in (200, 405)
    assert api.head(f"/api/dicom/metadata/{file_id}").status_code in (200, 405)
    assert AuditLog.objects.count() == before


def test_request_size_guards_answer_4xx_with_a_detail_never_500(api, storage_root, settings):
    import io

    ct = Path(CT_SMALL).read_bytes()
    parts = {f"part{i}": io.BytesIO(b"x") for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)}
    for part in parts.values():
        part.name = "x.dcm"
    many_files = api.post("/api/dicom/upload", {"file": io.BytesIO(ct), **parts}, format="multipart")
    assert many_files.status_code == 400 and "file parts" in many_files.json()["detail"]

    fields = {f"k{i}": "v" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    many_fields = api.post("/api/dicom/upload", fields, format="multipart")
    assert many_fields.status_code == 400 and "form fields" in many_fields.json()["detail"]

    big_field = api.post("/api/dicom/upload", {"study_type": "a" * 3_000_000}, format="multipart")
    assert big_field.status_code == 413 and "exceed" in big_field.json()["detail"]

    file_id = upload(api, CT_SMALL).json()["file_id"]
    deep = "[" * 100_000 + "]" * 100_000
    nested = api.generic("POST", f"/api/dicom/anonymize/{file_id}", deep, content_type="application/json")
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["detail"]

    # Bodies that are not multipart, 3 MB: JSON and a urlencoded form.
    big_json = '{"options": ["' + "a" * 3_000_000 + '"]}'
    too_big = api.generic(
        "POST", f"/api/dicom/anonymize/{file_id}", big_json, content_type="application/json"
    )
    assert too_big.status_code == 413 and set(too_big.json()) == {"detail"}
    form = "study_type=" + "a" * 3_000_000
    too_big = api.generic("POST", "/api/dicom/upload", form, content_type="application/x-www-form-urlencoded")
    assert too_big.status_code == 413 and set(too_big.json()) == {"detail"}
    assert DicomFile.objects.count() == 1  # the one upload above; nothing queued, nothing stored


def raw_upload(client, path, query: str = ""):
    return client.post(
        f"/api/dicom/upload{query}", data=Path(path).read_bytes(), content_type="application/dicom"
    )


def test_a_raw_dicom_body_answers_what_a_multipart_upload_does(api, user, storage_root):
    response = raw_upload(api, CT_SMALL, "?study_type=ct")

    assert response.status_code == 200, response.content
    body = response.json()
    multipart_body = upload(api, CT_SMALL, study_type="ct").json()
    assert set(body) == set(multipart_body)
    ignored = {"file_id"}
    assert {k: v for k, v in body["metadata"].items() if k not in ignored} == {
        k: v for k, v in multipart_body["metadata"].items() if k not in ignored
    }
    dicom_file = DicomFile.objects.get(pk=body["file_id"])
    stored = (storage_root / dicom_file.storage_key).read_bytes()
    assert stored[:128] == bytes(128) and stored[128:] == Path(CT_SMALL).read_bytes()[128:]
    assert dicom_file.sha256 == hashlib.sha256(stored).hexdigest()
    assert AuditLog.objects.filter(action="upload", success=True, file_id=dicom_file.id).count() == 1


def test_a_raw_body_takes_its_options_from_the_query_string(api, storage_root):
    response = raw_upload(api, CT_SMALL, "?anonymize=true&retain_full_dates=true")
    assert response.status_code == 200, response.content
    metadata = response.json()["metadata"]
    assert metadata["anonymized"] is True and metadata["study_date"] == "2004-01-19"
    assert metadata["patient_name"] != "CompressedSamples^CT1"


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("?anonymize=maybe", "anonymize"),
        ("?anonymise=true", "unknown field(s) anonymise"),
        ("?study_type=CT!", "study_type"),
    ],
)
def test_bad_query_parameters_of_a_raw_body_are_a_400_and_leave_nothing(api, storage_root, query, fragment):
    response = raw_upload(api, CT_SMALL, query)
    assert response.status_code == 400
    assert fragment in response.json()["detail"]
    assert DicomFile.objects.count() == 0 and stored_files(storage_root) == []


@pytest.mark.parametrize("kind", ["not-dicom", "empty", "cut-in-pixel-data", "deep-nesting"])
def test_a_raw_body_that_is_not_dicom_is_a_400_and_leaves_nothing(api, storage_root, tmp_path, kind):
    response = raw_upload(api, _bad_input(kind, tmp_path), "?anonymize=true")
    assert response.status_code == 400 and response.json()["detail"]
    assert DicomFile.objects.count() == 0 and stored_files(storage_root) == []


def test_a_raw_body_over_the_limit_is_a_413(api, settings, storage_root):
    settings.DICOM_MAX_UPLOAD_SIZE = 10_000
    response = raw_upload(api, CT_SMALL)
    assert response.status_code == 413 and "10000 bytes" in response.json()["detail"]
    assert stored_files(storage_root) == []


def test_upload_fields_in_the_query_of_a_multipart_upload_apply_and_one_in_both_is_a_400(api, storage_root):
    with open(CT_SMALL, "rb") as handle:
        response = api.post("/api/dicom/upload?anonymize=true&other=1", {"file": handle}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["metadata"]["anonymized"] is True
    with open(CT_SMALL, "rb") as handle:
        response = api.post(
            "/api/dicom/upload?anonymize=true", {"file": handle, "anonymize": "false"}, format="multipart"
        )
    assert response.status_code == 400
    assert "sent more than once: anonymize" in response.json()["detail"]
    assert DicomFile.objects.count() == 1 and len(stored_files(storage_root)) == 1
