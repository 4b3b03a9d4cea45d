"""The read-only analyst role, and secrets kept out of output and model configs."""

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ProgrammingError

from db.engine import create_db_engine, migrate
from db.models import ModelVersion
from db.settings import load_db_settings
from db.storage import S3Store
from tests.factories import write_manifest
from tests.services import (
    S3_REGION,
    PostgresServer,
    S3Server,
    create_database,
    free_port,
)
from tests.worker.celery_process import ROOT

ROLE = "hscode_analyst"
PASSWORD = "pw-Secret-4711"
ACCESS_KEY = "AKIASECRET4711TEST"
SECRET_KEY = "secret/Key+4711/never-shown"
SECRETS = (PASSWORD, ACCESS_KEY, SECRET_KEY)
BUCKET = "hscode-security"
COMMAND_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """Start a PostgreSQL server of the module's own, so roles stay off others."""
    with PostgresServer() as server:
        yield server


def migrated_engine(postgres: PostgresServer, tmp_path_factory) -> Engine:
    """Create and migrate a fresh database on the module's server."""
    url = create_database(postgres.url())
    env = {
        "HSCODE_DATABASE_URL": url,
        "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("security-data")),
    }
    engine = create_db_engine(load_db_settings(env))
    migrate(engine)
    return engine


@pytest.fixture(scope="module")
def engines(postgres, tmp_path_factory) -> Iterator[list[Engine]]:
    """Two migrated databases on one server: the second finds the role made."""
    created = [migrated_engine(postgres, tmp_path_factory) for _ in range(2)]
    yield created
    for engine in created:
        engine.dispose()


def select_as_analyst(engine: Engine, relation: str) -> list:
    """Select from a table or view with the analyst role's privileges."""
    with engine.connect() as connection:
        connection.execute(text(f"SET ROLE {ROLE}"))
        return connection.execute(text(f"SELECT * FROM {relation} LIMIT 1")).all()


@pytest.mark.parametrize("view", ["latest_predictions", "screening_flags"])
def test_analyst_reads_view(engines, view) -> None:
    assert select_as_analyst(engines[0], view) == []


@pytest.mark.parametrize(
    "table", ["declarations", "predictions", "model_versions", "scoring_failures"]
)
def test_analyst_denied_table(engines, table) -> None:
    with pytest.raises(ProgrammingError, match="permission denied"):
        select_as_analyst(engines[0], table)


def test_analyst_cannot_log_in(engines) -> None:
    with engines[0].connect() as connection:
        can_login = connection.execute(
            text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :role"),
            {"role": ROLE},
        ).scalar_one()

    assert can_login is False


def test_analyst_role_reused_by_second_database(engines) -> None:
    assert select_as_analyst(engines[1], "latest_predictions") == []


def test_analyst_role_survives_second_migration(engines) -> None:
    migrate(engines[0])

    with pytest.raises(ProgrammingError, match="permission denied"):
        select_as_analyst(engines[0], "declarations")


@pytest.fixture(scope="module")
def secret_env(postgres, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Services whose URL holds a password and whose store has real-looking keys.

    The server trusts every local connection, so the password is accepted
    unchecked, and moto accepts any key.
    """
    url = make_url(create_database(postgres.url())).set(password=PASSWORD)
    with S3Server() as s3:
        s3.create_bucket(BUCKET)
        yield {
            "HSCODE_DATABASE_URL": url.render_as_string(hide_password=False),
            "HSCODE_STORAGE_URL": f"s3://{BUCKET}",
            "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("secret-data")),
            "HSCODE_BROKER_URL": "",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": S3_REGION,
            "AWS_ENDPOINT_URL": s3.endpoint_url,
        }


def hscode(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `hscode -v ARGS` with debug logging; return its output."""
    return subprocess.run(
        [sys.executable, "-m", "hscode", "-v", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def secret_outputs(secret_env, tmp_path_factory) -> list[subprocess.CompletedProcess]:
    """Run the main commands, and one that fails to connect, with the secrets set."""
    manifest = write_manifest(
        tmp_path_factory.mktemp("secret-manifest"), 8, photo_every=4
    )
    unreachable = make_url(secret_env["HSCODE_DATABASE_URL"]).set(port=free_port())
    return [
        hscode(secret_env, "ingest", str(manifest)),
        hscode(secret_env, "train", "--model", "text", "--epochs", "1"),
        hscode(secret_env, "score"),
        hscode(secret_env, "status"),
        hscode(
            {
                **secret_env,
                "HSCODE_DATABASE_URL": unreachable.render_as_string(
                    hide_password=False
                ),
            },
            "migrate",
        ),
    ]


def test_secret_commands_ran(secret_outputs) -> None:
    assert [r.returncode for r in secret_outputs[:4]] == [0, 0, 0, 0]


def test_secret_unreachable_database_fails(secret_outputs) -> None:
    assert "Connection refused" in secret_outputs[4].stderr


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_absent_from_output(secret_outputs, secret) -> None:
    output = "".join(r.stdout + r.stderr for r in secret_outputs)

    assert secret not in output


def stored_model_config(env: dict[str, str]) -> str:
    """Return the champion's settings row and checkpoint config as one text."""
    engine = create_engine(env["HSCODE_DATABASE_URL"])
    with engine.connect() as connection:
        version = connection.execute(select(ModelVersion)).first()
    engine.dispose()
    store = S3Store(BUCKET)
    archive = tarfile.open(fileobj=io.BytesIO(store.get(version.weights_key)))
    config = archive.extractfile("config.json").read().decode()
    return json.dumps(version.settings) + config


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_absent_from_model_config(secret_env, secret_outputs, secret) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in secret_env.items():
            patch.setenv(name, value)
        stored = stored_model_config(secret_env)

    assert secret not in stored
