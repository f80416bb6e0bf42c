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
