"""Tests for docker-compose.yml: Compose Specification schema and stack wiring."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)
DEFAULTED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-[^}]+\}")
# A URL user or password may be a ${NAME:-default} interpolation, which
# contains a colon of its own, so each one is matched as a unit.
INTERPOLATION = r"\$\{[^}]*\}"
URL_USER = rf"(?:{INTERPOLATION}|[^/:@\s])+"
URL_PASSWORD = rf"(?:{INTERPOLATION}|[^/@\s])+"
URL_CREDENTIALS = re.compile(rf"://{URL_USER}:(?P<password>{URL_PASSWORD})@")


def load_compose() -> dict[str, Any]:
    """Parse docker-compose.yml, resolving its YAML anchors and merge keys."""
    with COMPOSE_FILE.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


def load_schema() -> dict[str, Any]:
    """Load the vendored Compose Specification JSON schema."""
    with SCHEMA_FILE.open(encoding="utf-8") as file:
        return json.load(file)


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Return one line per schema violation, with the path of the value."""
    validator = Draft202012Validator(load_schema())
    errors = validator.iter_errors(document)

    return [f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """Return a service's environment as a mapping, from either Compose form."""
    entries = service.get("environment", {})
    if isinstance(entries, dict):
        return {name: str(value) for name, value in entries.items()}

    pairs = (entry.partition("=") for entry in entries)
    return {name: value for name, _, value in pairs}


def literal_url_passwords(value: str) -> list[str]:
    """Return the URL passwords in a value that are not defaulted variables."""
    passwords = (match["password"] for match in URL_CREDENTIALS.finditer(value))

    return [item for item in passwords if not DEFAULTED_VARIABLE.fullmatch(item)]


def depends_on_names(service: dict[str, Any]) -> list[str]:
    """Return the service names in depends_on, from either Compose form."""
    return list(service.get("depends_on", []))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(load_schema())


def test_compose_matches_spec_schema(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_schema_rejects_unknown_service_key(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["comand"] = ["redis-server"]

    assert schema_errors(broken) != []


def test_depends_on_names_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = [
        f"{name} -> {dependency}"
        for name, service in services.items()
        for dependency in depends_on_names(service)
        if dependency not in services
    ]

    assert missing == []


def test_migrate_waits_for_database_and_bucket(
    services: dict[str, dict[str, Any]],
) -> None:
    depends_on = services["migrate"]["depends_on"]

    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["minio-setup"]["condition"] == ("service_completed_successfully")


@pytest.mark.parametrize("worker", ["worker-gpu", "worker-cpu"])
def test_worker_waits_for_migrate(
    services: dict[str, dict[str, Any]], worker: str
) -> None:
    condition = services[worker]["depends_on"]["migrate"]["condition"]

    assert condition == "service_completed_successfully"


def test_workers_share_image_build(services: dict[str, dict[str, Any]]) -> None:
    gpu = services["worker-gpu"]
    cpu = services["worker-cpu"]

    assert gpu["build"] == cpu["build"]
    assert gpu["image"] == cpu["image"]
    assert gpu["build"]["dockerfile"] == "Dockerfile.gpu"


def test_migrate_shares_worker_image(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["build"] == services["worker-gpu"]["build"]
    assert services["migrate"]["image"] == services["worker-gpu"]["image"]


def test_gpu_worker_reserves_gpu(services: dict[str, dict[str, Any]]) -> None:
    resources = services["worker-gpu"]["deploy"]["resources"]
    devices = resources["reservations"]["devices"]
    nvidia = [device for device in devices if device.get("driver") == "nvidia"]

    assert len(nvidia) == 1
    assert nvidia[0]["count"] == 1
    assert "gpu" in nvidia[0]["capabilities"]


def test_cpu_worker_reserves_no_gpu(services: dict[str, dict[str, Any]]) -> None:
    assert "deploy" not in services["worker-cpu"]


def test_workers_device_setting(services: dict[str, dict[str, Any]]) -> None:
    assert environment(services["worker-gpu"])["HSCODE_DEVICE"] == "cuda"
    assert environment(services["worker-cpu"])["HSCODE_DEVICE"] == "cpu"


def test_only_gpu_worker_takes_training(
    services: dict[str, dict[str, Any]],
) -> None:
    gpu_command = services["worker-gpu"]["command"]
    cpu_command = services["worker-cpu"]["command"]

    assert gpu_command[gpu_command.index("--queues") + 1] == "score,train"
    assert cpu_command[cpu_command.index("--queues") + 1] == "score"


def test_services_share_hscode_env(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    shared = compose["x-hscode-env"]

    for name in ["migrate", "worker-gpu", "worker-cpu"]:
        service_env = environment(services[name])
        assert {key: service_env.get(key) for key in shared} == shared, name


def test_secret_names_use_defaulted_variables(
    services: dict[str, dict[str, Any]],
) -> None:
    literal = [
        f"{name}: {key}"
        for name, service in services.items()
        for key, value in environment(service).items()
        if SECRET_NAME.search(key) and not DEFAULTED_VARIABLE.fullmatch(value)
    ]

    assert literal == []


def test_url_passwords_use_defaulted_variables(
    services: dict[str, dict[str, Any]],
) -> None:
    literal = [
        f"{name}: {key}"
        for name, service in services.items()
        for key, value in environment(service).items()
        if literal_url_passwords(value)
    ]

    assert literal == []


def test_url_password_check_flags_literal() -> None:
    url = "postgresql://hscode:hunter22@postgres:5432/hscode"

    assert literal_url_passwords(url) == ["hunter22"]


def test_url_password_check_reads_variable_user() -> None:
    url = "http://${USER_NAME:-hscode}:${USER_PASSWORD:-hscode-minio}@minio:9000"

    assert literal_url_passwords(url) == []


def test_minio_gets_same_credentials_as_clients(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    minio = environment(services["minio"])
    shared = compose["x-hscode-env"]

    assert minio["MINIO_ROOT_USER"] == shared["AWS_ACCESS_KEY_ID"]
    assert minio["MINIO_ROOT_PASSWORD"] == shared["AWS_SECRET_ACCESS_KEY"]


def test_redis_keeps_no_data(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]

    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--appendonly") + 1] == "no"


def test_migrate_runs_hscode_migrate(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]

    assert migrate["entrypoint"] == ["/usr/bin/env"]
    assert migrate["command"] == ["hscode", "migrate"]


@pytest.mark.parametrize("worker", ["worker-gpu", "worker-cpu"])
def test_worker_keeps_celery_entrypoint(
    services: dict[str, dict[str, Any]], worker: str
) -> None:
    assert "entrypoint" not in services[worker]
