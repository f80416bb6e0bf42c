"""``manage.py worker_health``: the worker container's health check, read from heartbeat rows."""

import socket
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dicom.services import jobs

pytestmark = pytest.mark.django_db


def test_healthy_while_this_hosts_worker_beats(capsys):
    jobs.beat(worker_id="w-1")
    call_command("worker_health")
    assert capsys.readouterr().out.startswith(f"healthy: the worker on {socket.gethostname()} beat ")


def test_unhealthy_without_a_heartbeat_on_this_host():
    jobs.beat(worker_id="w-elsewhere")
    with pytest.raises(CommandError, match="no worker on other-host has beaten"):
        call_command("worker_health", hostname="other-host")


def test_unhealthy_when_the_heartbeat_is_stale(settings):
    jobs.beat(
        worker_id="w-1", now=timezone.now() - timedelta(seconds=settings.DICOM_WORKER_STALE_SECONDS + 5)
    )
    with pytest.raises(CommandError, match=r"last beat \d+ s ago"):
        call_command("worker_health")
    # A fresher row of a restarted worker on the same host counts.
    jobs.beat(worker_id="w-2")
    call_command("worker_health")


def test_max_age_narrows_the_bound():
    jobs.beat(worker_id="w-1", now=timezone.now() - timedelta(seconds=2))
    call_command("worker_health")
    with pytest.raises(CommandError, match=r"bound 1 s"):
        call_command("worker_health", max_age=1.0)
