"""OHIF v3 (the project's /viewer/) in headless Chromium against the running service.

A staff member logs in to the admin, opens the viewer: its study list shows the stored study, the
study opens and its image is drawn in the viewport, and none of the DICOMweb requests the viewer made
failed. The service runs as ``make run`` starts it (uvicorn, the worker), not the test client.
"""

import json
import os
import re
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom.tests.conftest import embedded_service
from dicom.tests.services.dicom_builders import fresh_instance, part10_bytes
from dicomweb import viewer
from dicomweb.tests.conftest import DicomWebServer
from dicomweb.tests.ohif import DRAWN

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not viewer.installed(), reason="the viewer is not installed (make test installs it)"),
]

PASSWORD = "viewer-password-123"


def _series(count: int) -> tuple[str, list[bytes]]:
    study, series = generate_uid(), generate_uid()
    files = []
    for number in range(1, count + 1):
        ds = fresh_instance("CT_small.dcm", study=study, series=series)
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [0, 0, float(number)]
        ds.PatientName, ds.PatientID, ds.StudyDescription = "VIEWER^TEST", "VIEWER-1", "OHIF check"
        files.append(part10_bytes(ds))
    return study, files


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ohif")
    with embedded_service(tmp) as live:
        server = DicomWebServer(live=live, data_dir=tmp / "data", other_token="", staff_token="")
        server.manage(
            "from django.contrib.auth.models import User;"
            f"User.objects.create_superuser('radiologist', password={PASSWORD!r})"
        )
        yield server


def test_ohif_lists_the_study_opens_it_and_draws_the_image(service, browser):
    study, files = _series(5)
    for data in files:
        status, body = service.live.request(
            "POST", "/api/dicom/upload", body=data, headers={"Content-Type": "application/dicom"}
        )
        assert status == 200, body
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    failures, dicomweb_requests = [], []

    def seen(response):
        if "/dicomweb/" in response.url:
            dicomweb_requests.append(response.url)
            if response.status >= 400:
                failures.append(f"{response.status} {response.url}")

    page.on("response", seen)
    base = f"http://127.0.0.1:{service.port}"
    try:
        page.goto(f"{base}/admin/login/?next=/viewer/")
        page.fill("#id_username", "radiologist")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"/viewer/"))
        # The study list: QIDO-RS through the viewer's session.
        page.get_by_text("OHIF check").first.wait_for()
        page.goto(f"{base}/viewer/viewer?StudyInstanceUIDs={study}")
        page.wait_for_function(DRAWN, timeout=60_000)
        if os.environ.get("DICOM_SCREENSHOT_DIR"):
            page.screenshot(path=str(Path(os.environ["DICOM_SCREENSHOT_DIR"]) / "ohif-study.png"))
    finally:
        context.close()
    assert not failures, json.dumps(failures[:10])
    assert any("/metadata" in url for url in dicomweb_requests)
    assert any("/frames/" in url for url in dicomweb_requests)
