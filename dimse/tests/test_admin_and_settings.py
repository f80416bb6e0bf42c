"""The application entities' admin (model permissions decide) and the node's documented settings."""

import os
import re
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission

from dicom.tests.conftest import ROOT
from dicom.tests.factories import UserFactory
from dimse.models import ApplicationEntity
from dimse.tests.factories import ApplicationEntityFactory

CHANGELIST = "/admin/dimse/applicationentity/"


def _staff(*codenames: str):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="dimse", codename__in=codenames)
    )
    return user


@pytest.mark.django_db
def test_staff_need_the_model_permissions(client):
    ApplicationEntityFactory(ae_title="CT1")
    client.force_login(_staff())
    assert client.get(CHANGELIST).status_code == 403
    client.force_login(_staff("view_applicationentity"))
    listing = client.get(CHANGELIST)
    assert listing.status_code == 200 and b"CT1" in listing.content
    assert client.get(f"{CHANGELIST}add/").status_code == 403


@pytest.mark.django_db
def test_staff_with_change_permissions_register_an_ae(client):
    account = UserFactory(username="ct-account")
    client.force_login(_staff("view_applicationentity", "add_applicationentity", "change_applicationentity"))
    form = {"ae_title": "CT 2", "description": "", "account": account.pk, "enabled": "on", "may_store": "on"}
    response = client.post(f"{CHANGELIST}add/", {**form, "host": "", "port": ""})
    assert response.status_code == 302
    entity = ApplicationEntity.objects.get(ae_title="CT 2")
    assert entity.account == account and entity.may_store and not entity.may_query
    bad = client.post(f"{CHANGELIST}add/", {**form, "ae_title": "BACK\\SLASH", "port": "70000"})
    assert bad.status_code == 200 and ApplicationEntity.objects.count() == 1


def test_every_scp_setting_is_documented():
    settings_text = (ROOT / "dicomsite" / "settings.py").read_text()
    example = (ROOT / ".env.example").read_text()
    names = set(re.findall(r'env_\w+\("(DICOM_SCP_\w+)"', settings_text))
    assert len(names) >= 8
    for name in names:
        assert re.search(rf"^{name}=", example, re.MULTILINE), name


@pytest.mark.slow
def test_production_never_trusts_loopback():
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}},
        "DJANGO_PRODUCTION": "true",
        "DJANGO_SECRET_KEY": "s" * 40,
        "DJANGO_ALLOWED_HOSTS": "pacs.example.org",
        "DICOM_DEID_KEY": "k" * 40,
        "DICOM_SCP_TRUST_LOOPBACK": "true",
    }
    code = "from django.conf import settings; print(settings.DICOM_SCP_TRUST_LOOPBACK)"
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip().splitlines()[-1] == "False"
