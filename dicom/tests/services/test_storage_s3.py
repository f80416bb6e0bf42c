"""The S3 path of storage against a real S3-compatible HTTP server on loopback (moto's server mode)."""

from pathlib import Path

import boto3
import pytest
from pydicom.data import get_testdata_file

from dicom.models import DicomFile
from dicom.tests.jobs import run_worker

pytestmark = pytest.mark.django_db

CT_SMALL = get_testdata_file("CT_small.dcm")
BUCKET = "dicom-test"


@pytest.fixture
def s3_bucket(settings, s3_endpoint):
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test-secret"}
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **credentials)
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "access_key": credentials["aws_access_key_id"],
                "secret_key": credentials["aws_secret_access_key"],
                "file_overwrite": True,
                "default_acl": None,
            },
        },
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def keys(client) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_upload_download_and_anonymize_through_s3(api, s3_bucket):
    with open(CT_SMALL, "rb") as handle:
        response = api.post("/api/dicom/upload", {"file": handle}, format="multipart")
    assert response.status_code == 200
    file_id = response.json()["file_id"]
    assert keys(s3_bucket) == [f"dicom/{file_id[:2]}/{file_id}.dcm"]

    download = api.get(f"/api/dicom/download/{file_id}")
    content = b"".join(download.streaming_content)
    assert content[128:] == Path(CT_SMALL).read_bytes()[128:]
    assert content[:128] == bytes(128)

    derived_id = api.post(f"/api/dicom/anonymize/{file_id}").json()["anonymized_file_id"]
    run_worker()
    assert DicomFile.objects.get(pk=derived_id).status == DicomFile.Status.COMPLETED
    assert f"dicom/{derived_id[:2]}/{derived_id}.dcm" in keys(s3_bucket)
    derived = b"".join(api.get(f"/api/dicom/download/{derived_id}").streaming_content)
    assert b"CompressedSamples" not in derived


def test_rejected_upload_leaves_nothing_in_the_bucket(api, s3_bucket, tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(bytes(128) + b"DICM")
    with open(bad, "rb") as handle:
        response = api.post("/api/dicom/upload", {"file": handle}, format="multipart")
    assert response.status_code == 400
    assert keys(s3_bucket) == []
