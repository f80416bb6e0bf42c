"""The staff admin in a real browser: headless Debian Chromium driven by Playwright's sync API.

Run against pytest-django's ``live_server``. Screenshots go to ``$DICOM_SCREENSHOT_DIR`` when set (to look
at them), otherwise to the test's temporary directory.
"""

import os
import re
from pathlib import Path

import pytest
from django.core.management import call_command

from audit.models import AuditLog
from dicom.models import DicomFile
from dicom.tests.admin.conftest import PASSWORD, store_test_file

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ALL_IMAGES_LOADED = """
selector => {
  const images = [...document.querySelectorAll(selector)];
  return images.length > 0 && images.every(image => image.complete && image.naturalWidth > 0);
}
"""


@pytest.fixture
def screenshots(tmp_path) -> Path:
    directory = Path(os.environ.get("DICOM_SCREENSHOT_DIR") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def log_in(page, live_server, username: str, next_path: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(re.escape(next_path) + "$"))


def assert_admin_styled(page) -> None:
    # The admin's stylesheet gives the header its dark background; unstyled, it is transparent.
    background = page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background


def test_staff_browse_open_anonymize_and_audit(page, live_server, phi_staff, user, screenshots):
    original = store_test_file("CT_small.dcm", owner=user, study_type="ct")
    jpeg2000 = store_test_file("693_J2KI.dcm", owner=user, study_type="ct")

    log_in(page, live_server, "officer", "/admin/dicom/dicomfile/")
    assert_admin_styled(page)
    page.wait_for_function(ALL_IMAGES_LOADED, arg="img.dicom-thumb")
    widths = page.eval_on_selector_all("img.dicom-thumb", "images => images.map(image => image.naturalWidth)")
    assert widths == [128, 128]
    page.screenshot(path=screenshots / "01-file-list.png", full_page=True)

    page.click(f"#result_list .field-id a:text('{original.id}')")
    page.wait_for_url(f"**/admin/dicom/dicomfile/{original.id}/change/")
    page.wait_for_function(ALL_IMAGES_LOADED, arg="#dicom-image")
    assert page.eval_on_selector("#dicom-image", "image => image.naturalWidth") == 128
    metadata = page.inner_text("#dicom-metadata")
    for expected in (
        "PATIENT",
        "STUDY",
        "SERIES",
        "IMAGE",
        "Patient's Name",
        original.metadata["patient_name"],
    ):
        assert expected in metadata
    assert "Download DICOM" in page.text_content(".object-tools")
    page.screenshot(path=screenshots / "02-file-page.png", full_page=True)

    page.goto(f"{live_server.url}/admin/dicom/dicomfile/")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "anonymize_selected")
    page.click("button[name=index]")
    page.wait_for_selector("#anonymize-form")
    page.check("input[name=retain_uids]")
    page.screenshot(path=screenshots / "03-anonymize-options.png", full_page=True)
    page.click("#anonymize-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "Queued 2 files for anonymization." in page.inner_text(".messagelist")

    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", "--interval", "0")
    derived = DicomFile.objects.filter(source__in=[original, jpeg2000])
    assert sorted(d.status for d in derived) == ["completed", "completed"]

    page.goto(f"{live_server.url}/admin/dicom/dicomfile/?anonymized__exact=1")
    page.wait_for_function(ALL_IMAGES_LOADED, arg="img.dicom-thumb")
    statuses = page.eval_on_selector_all(
        "#result_list td.field-status", "cells => cells.map(c => c.innerText)"
    )
    assert statuses == ["Completed", "Completed"]
    page.screenshot(path=screenshots / "04-derived-files.png", full_page=True)

    page.goto(f"{live_server.url}/admin/audit/auditlog/")
    table = page.inner_text("#result_list")
    for action in ("Anonymize", "Background job", "Bulk anonymize", "View", "Upload"):
        assert action in table
    assert page.is_visible("a.export-csv")
    assert_admin_styled(page)
    page.screenshot(path=screenshots / "05-audit-trail.png", full_page=True)
    assert AuditLog.objects.filter(action="job", success=True).count() == 2


def test_staff_without_patient_data_permission_see_masked_fields(
    page, live_server, plain_staff, user, screenshots
):
    original = store_test_file("CT_small.dcm", owner=user)
    deidentified = store_test_file("MR_small.dcm", owner=user, anonymize=True)

    log_in(page, live_server, "clerk", "/admin/dicom/dicomfile/")
    page.wait_for_function(ALL_IMAGES_LOADED, arg="img.dicom-thumb")
    patients = page.eval_on_selector_all(
        "#result_list td.field-patient", "cells => cells.map(c => c.innerText)"
    )
    assert patients == [deidentified.patient_id, "•••"]  # newest first
    assert original.patient_id not in page.content()
    page.screenshot(path=screenshots / "06-masked-list.png", full_page=True)

    page.goto(f"{live_server.url}/admin/dicom/dicomfile/{original.id}/change/")
    page.wait_for_function(ALL_IMAGES_LOADED, arg="#dicom-image")
    # The original's image is withheld: the 512 px placeholder, not the 128 px CT.
    assert page.eval_on_selector("#dicom-image", "image => image.naturalWidth") == 512
    metadata = page.inner_text("#dicom-metadata")
    assert original.metadata["patient_name"] not in metadata
    assert metadata.count("•••") >= 5
    assert "patient data masked" in page.inner_text("#content-main")
    page.screenshot(path=screenshots / "07-masked-file-page.png", full_page=True)

    page.goto(f"{live_server.url}/admin/dicom/dicomfile/{deidentified.id}/change/")
    page.wait_for_function(ALL_IMAGES_LOADED, arg="#dicom-image")
    assert page.eval_on_selector("#dicom-image", "image => image.naturalWidth") == 64  # MR_small is 64x64
    assert "•••" not in page.inner_text("#dicom-metadata")
