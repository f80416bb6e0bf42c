"""docker-compose.yml is a valid Compose file describing the production shape, and refuses to start without its secrets."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "DJANGO_SECRET_KEY": "x" * 50,
    "DICOM_DEID_KEY": "k" * 64,
    "S3_SECRET_KEY": "s3-secret-for-the-test",
    "POSTGRES_PASSWORD": "pg-password-for-the-test",
}


def _compose() -> list[str] | None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


COMPOSE = _compose()
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="no docker compose client (make test installs docker-compose)"
)


@pytest.fixture
def empty_env_file(tmp_path) -> Path:
    # An empty env file: a developer's own .env beside the compose file must not make the test pass.
    path = tmp_path / "empty.env"
    path.write_text("")
    return path


def _config(env: dict[str, str], env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMPOSE, "--env-file", str(env_file), "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_compose_file_is_valid_and_has_the_production_shape(empty_env_file):
    result = _config(SECRETS, empty_env_file)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"migrate", "web", "worker", "dimse", "db", "s3"} <= set(services)
    web, worker = services["web"], services["worker"]
    command = web["command"] if isinstance(web["command"], str) else " ".join(web["command"])
    assert "dicomsite.asgi:application" in command
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    assert "worker_health" in " ".join(worker["healthcheck"]["test"])
    assert services["web"]["environment"]["DJANGO_PRODUCTION"] == "true"
    # Web and workers start only after the migrations ran once.
    for name in ("web", "worker", "dimse"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The DIMSE node listens on every interface of its container, in production (no loopback trust).
    dimse = services["dimse"]
    assert "dicom_scp" in str(dimse["command"])
    assert dimse["environment"]["DICOM_SCP_HOST"] == "0.0.0.0"  # noqa: S104 (the container's interfaces)
    assert dimse["environment"]["DJANGO_PRODUCTION"] == "true"
    assert [str(p.get("target")) for p in dimse["ports"]] == ["11112"]


@pytest.mark.parametrize("missing", sorted(set(SECRETS) - {"POSTGRES_PASSWORD"}))
def test_it_refuses_to_start_without_a_secret(missing, empty_env_file):
    result = _config({name: value for name, value in SECRETS.items() if name != missing}, empty_env_file)
    assert result.returncode != 0
    assert missing in result.stderr
