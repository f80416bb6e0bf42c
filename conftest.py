"""Fixtures shared by every app's tests: storage in a temporary directory, users and API clients."""

import pytest
from django.core.management.commands import flush
from django.db import DEFAULT_DB_ALIAS, connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dicom.api.authentication import clear_token_cache


def _flush_past_the_audit_trigger(handle):
    """``manage.py flush`` with the audit trail's append-only trigger skipped for that command only.

    Transactional tests end with a flush (a TRUNCATE of every table), which the trigger refuses.
    ``session_replication_role = replica`` (a superuser's setting, as the test database's user is)
    skips triggers for the flush's statements and is set back right after; everything else in the
    suite runs with the trigger on.
    """

    def flush_handle(self, **options):
        connection = connections[options.get("database") or DEFAULT_DB_ALIAS]
        if connection.vendor != "postgresql":
            return handle(self, **options)
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        try:
            return handle(self, **options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = origin")

    return flush_handle


flush.Command.handle = _flush_past_the_audit_trigger(flush.Command.handle)


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
