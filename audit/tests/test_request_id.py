"""One request id per HTTP request, on each of its audit rows and in the response."""

import pytest
from pydicom.data import get_testdata_file

from audit.context import RequestIdFilter
from audit.models import AuditLog

pytestmark = pytest.mark.django_db


def test_every_row_of_a_request_carries_its_id_and_requests_differ(api):
    with open(get_testdata_file("CT_small.dcm"), "rb") as handle:
        first = api.post("/api/dicom/upload", {"file": handle}, format="multipart")
    second = api.get(f"/api/dicom/status/{first.json()['file_id']}")
    rows = list(AuditLog.objects.order_by("id"))
    assert [str(row.request_id) for row in rows] == [first["X-Request-ID"], second["X-Request-ID"]]
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_djangos_own_line_for_a_refused_request_carries_the_request_id(api, caplog):
    caplog.handler.addFilter(RequestIdFilter())  # as the console handler has it: the id when written
    with caplog.at_level("WARNING", logger="django.request"):
        response = api.get("/api/dicom/status/00000000-0000-0000-0000-000000000000?q=Doe")
    assert response.status_code == 404
    (record,) = [record for record in caplog.records if record.name == "django.request"]
    assert record.request_id == response["X-Request-ID"]
    assert "Doe" not in record.getMessage()
