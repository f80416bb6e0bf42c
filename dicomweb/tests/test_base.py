"""What every DICOMweb resource shares: the API's credentials, refusals audited, errors as JSON."""

import pytest

from audit.models import AuditLog

pytestmark = pytest.mark.django_db


def test_a_request_without_credentials_is_a_401_with_a_detail_and_is_tallied(client):
    response = client.get("/dicomweb/studies", HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"detail"}
    assert response["WWW-Authenticate"].startswith("Token")


def test_a_bad_token_is_refused_and_audited_under_the_search_action(client):
    response = client.get("/dicomweb/studies", HTTP_AUTHORIZATION="Token nope")
    assert response.status_code == 401
    from audit.models import RefusalTally

    assert RefusalTally.objects.get().action == AuditLog.Action.SEARCH


def test_an_unknown_method_is_a_405_that_says_what_is_allowed(api):
    response = api.delete("/dicomweb/studies")
    assert response.status_code == 405
    assert set(response.json()) == {"detail"}
    assert set(response["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_a_path_that_is_no_resource_is_a_json_404(api):
    response = api.get("/dicomweb/studies/1.2.3/nothing-here")
    assert response.status_code == 404


def _root(rf, settings, public: str = "", **headers) -> str:
    from dicomweb.base import service_root

    settings.DICOMWEB_PUBLIC_URL = public
    return service_root(rf.get("/dicomweb/studies", **headers))


def test_the_service_root_is_the_requests_own_without_a_proxy(rf, settings):
    assert _root(rf, settings) == "http://testserver/dicomweb"


def test_the_service_root_follows_forwarded_or_x_forwarded_headers(rf, settings):
    forwarded = {"HTTP_FORWARDED": 'for=10.0.0.1;proto=https;host="pacs.example.org"'}
    assert _root(rf, settings, **forwarded) == "https://pacs.example.org/dicomweb"
    x_forwarded = {
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_FORWARDED_HOST": "viewer.example.org:8443",
        "HTTP_X_FORWARDED_PREFIX": "/pacs",
    }
    assert _root(rf, settings, **x_forwarded) == "https://viewer.example.org:8443/pacs/dicomweb"


def test_a_configured_public_url_wins_and_malformed_headers_are_ignored(rf, settings):
    assert _root(rf, settings, "https://dicom.example.org/dicomweb/") == "https://dicom.example.org/dicomweb"
    odd = {"HTTP_X_FORWARDED_HOST": "evil.example/<script>", "HTTP_X_FORWARDED_PROTO": "javascript"}
    assert _root(rf, settings, **odd) == "http://testserver/dicomweb"
