"""Fixtures that start PostgreSQL, Redis and S3 only for tests that request them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.services import (
    S3_ACCESS_KEY,
    S3_REGION,
    S3_SECRET_KEY,
    PostgresServer,
    RedisServer,
    S3Server,
    create_database,
    drop_database,
    shared_postgres_admin_url,
    shared_redis_url,
)

REDIS_TEST_DB = 11
STORAGE_BUCKET = "hscode-test"


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """Yield the shared PostgreSQL URL, or a throwaway server's if it is down."""
    shared_url = shared_postgres_admin_url()
    if shared_url is not None:
        yield shared_url
        return

    with PostgresServer() as server:
        yield server.url()


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """Yield the URL of a fresh database that is dropped after the session."""
    url = create_database(postgres_admin_url)
    yield url
    drop_database(url)


def _flush_redis_db(url: str) -> None:
    """Delete every key of the one Redis database that a URL names."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Yield an empty Redis db: the shared server's db 11, or a throwaway server."""
    shared_url = shared_redis_url(REDIS_TEST_DB)
    if shared_url is None:
        with RedisServer() as server:
            yield server.url(REDIS_TEST_DB)
        return

    _flush_redis_db(shared_url)
    yield shared_url
    _flush_redis_db(shared_url)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Yield a running moto S3 server."""
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def storage_bucket(s3_server: S3Server) -> str:
    """Create the storage bucket on the S3 server and return its name."""
    s3_server.create_bucket(STORAGE_BUCKET)
    return STORAGE_BUCKET


@pytest.fixture(scope="session")
def services_env(
    database_url: str,
    redis_url: str,
    s3_server: S3Server,
    storage_bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Return the environment variables that point the product at the services."""
    return {
        "HSCODE_DATABASE_URL": database_url,
        "HSCODE_BROKER_URL": redis_url,
        "HSCODE_STORAGE_URL": f"s3://{storage_bucket}",
        "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
    }


@pytest.fixture
def use_services(
    services_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Set the service variables in os.environ for one test and return them."""
    for name, value in services_env.items():
        monkeypatch.setenv(name, value)

    return services_env


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clear the service variables and return a fresh HSCODE_DATA_DIR."""
    for name in list(os.environ):
        if name.startswith("HSCODE_") or name == "AWS_ENDPOINT_URL":
            monkeypatch.delenv(name)

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("HSCODE_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture(scope="module")
def module_services_env(
    services_env: dict[str, str], postgres_admin_url: str, tmp_path_factory
) -> Iterator[dict[str, str]]:
    """The services environment with a database and data folder of the module's own."""
    url = create_database(postgres_admin_url)
    data_dir = tmp_path_factory.mktemp("module-data")
    yield {**services_env, "HSCODE_DATABASE_URL": url, "HSCODE_DATA_DIR": str(data_dir)}
    drop_database(url)
