"""The OHIF viewer under /viewer/ (staff sessions only) and CORS for viewers on other origins."""

import pytest
from django.test import Client

from dicomweb import viewer

pytestmark = pytest.mark.django_db

needs_viewer = pytest.mark.skipif(
    not viewer.installed(),
    reason="the viewer is not installed (make test installs it: scripts/install_viewer.py)",
)


@pytest.fixture
def staff_client(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def test_the_viewer_needs_a_staff_session(client, user):
    assert client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3").status_code == 302
    assert client.get("/viewer/app-config.js").status_code == 302
    client.force_login(user)  # not staff
    response = client.get("/viewer/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@needs_viewer
def test_any_viewer_route_is_ohifs_page_with_its_assets_under_viewer(staff_client):
    response = staff_client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert response.status_code == 200
    page = b"".join(response.streaming_content).decode()
    assert 'window.PUBLIC_URL="/viewer/"' in page
    assert 'src="/viewer/app-config.js"' in page
    assert 'src="/app' not in page and 'href="/assets' not in page


def test_the_configuration_points_ohif_at_this_services_dicomweb_root(staff_client):
    response = staff_client.get("/viewer/app-config.js", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    body = response.content.decode()
    assert body.startswith("window.config = ")
    assert '"qidoRoot": "https://testserver/dicomweb"' in body
    assert '"wadoRoot": "https://testserver/dicomweb"' in body
    assert '"routerBasename": "/viewer"' in body


@needs_viewer
def test_the_bundles_are_served_as_immutable_files_without_a_session(client):
    from django.conf import settings

    bundle = next(settings.DICOM_VIEWER_DIR.glob("app.bundle.*.js")).name
    response = client.get(f"/viewer/{bundle}")
    assert response.status_code == 200
    assert "immutable" in response["Cache-Control"]
    assert b'__webpack_require__.p = "/viewer/";' in b"".join(response.streaming_content)


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://viewer.example.org"]


def test_a_preflight_from_an_allowed_origin_allows_the_token_and_multipart_bodies(client, cors):
    response = client.options(
        "/dicomweb/studies",
        HTTP_ORIGIN="https://viewer.example.org",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "accept"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]


def test_a_cross_origin_request_gets_the_headers_only_from_an_allowed_origin(api, cors):
    allowed = api.get("/dicomweb/studies", HTTP_ORIGIN="https://viewer.example.org")
    assert allowed["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    other = api.get("/dicomweb/studies", HTTP_ORIGIN="https://elsewhere.example.org")
    assert "Access-Control-Allow-Origin" not in other
    # The REST API and the admin are not offered to other origins.
    assert "Access-Control-Allow-Origin" not in api.get(
        "/api/dicom/status/x", HTTP_ORIGIN="https://viewer.example.org"
    )
