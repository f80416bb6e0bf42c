"""Fixtures shared by every app's tests: storage in a temporary directory, users and API clients."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dicom.api.authentication import clear_token_cache


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    """Each test stores into its own directory, with its own de-identification key."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "files"), "file_permissions_mode": 0o600},
        },
    }
    settings.DICOM_DEID_KEY = "test-key-0123456789abcdef0123456789abcdef"
    clear_token_cache()
    yield tmp_path / "files"
    clear_token_cache()


@pytest.fixture
def storage_root(_isolated_storage):
    return _isolated_storage


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="alice-password-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="bob-password-123")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="staff-password-123", is_staff=True
    )


def _client_for(user) -> APIClient:
    client = APIClient()
    token = Token.objects.create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user) -> APIClient:
    return _client_for(user)


@pytest.fixture
def other_api(other_user) -> APIClient:
    return _client_for(other_user)


@pytest.fixture
def staff_api(staff_user) -> APIClient:
    return _client_for(staff_user)
