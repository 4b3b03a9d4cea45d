"""Tests of the throwaway servers and database helpers in tests.services."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg2
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.services import (
    HOST,
    PostgresServer,
    RedisServer,
    S3Server,
    create_database,
    drop_database,
    free_port,
    shared_postgres_admin_url,
    shared_redis_url,
)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """Yield a throwaway PostgreSQL server shared by this module's tests."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """Yield a throwaway Redis server for one test."""
    with RedisServer() as server:
        yield server


def scalar(url: str, query: str) -> object:
    """Run one query through SQLAlchemy and return the first column of its row."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            return connection.execute(text(query)).scalar()
    finally:
        engine.dispose()


def execute(url: str, statement: str) -> None:
    """Run one statement through SQLAlchemy and commit it."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def test_free_port_binds() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, free_port()))


def test_postgres_select_one(postgres: PostgresServer) -> None:
    assert scalar(postgres.url(), "select 1") == 1


def test_postgres_kill_keeps_rows(postgres: PostgresServer) -> None:
    execute(
        postgres.url(), "create table kept (value int); insert into kept values (7)"
    )

    postgres.kill()
    postgres.start()

    assert scalar(postgres.url(), "select value from kept") == 7


def test_postgres_kill_stops_server(postgres: PostgresServer) -> None:
    postgres.kill()

    try:
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(host=HOST, port=postgres.port, user="postgres")
    finally:
        postgres.start()


def test_postgres_restart_keeps_port(postgres: PostgresServer) -> None:
    url = postgres.url()

    postgres.restart()

    assert scalar(url, "select 1") == 1


@pytest.fixture
def busy_port() -> Iterator[int]:
    """Yield a port on 127.0.0.1 that a listening socket occupies."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def open_base_dir() -> Iterator[Path]:
    """Yield an empty folder that the PostgreSQL system user can traverse."""
    base_dir = Path(tempfile.mkdtemp(prefix="hscode-base-"))
    base_dir.chmod(0o755)
    yield base_dir
    shutil.rmtree(base_dir)


def test_postgres_busy_port_shows_log(busy_port: int) -> None:
    server = PostgresServer(port=busy_port)
    try:
        with pytest.raises(RuntimeError, match="could not bind"):
            server.start()
    finally:
        server.close()


def test_postgres_failed_enter_cleans_up(busy_port: int, open_base_dir: Path) -> None:
    server = PostgresServer(port=busy_port, base_dir=open_base_dir)
    with pytest.raises(RuntimeError), server:
        pass

    assert list(open_base_dir.iterdir()) == []


def test_postgres_close_removes_cluster() -> None:
    with PostgresServer() as server:
        root = server.root

    assert root is not None
    assert not root.exists()


def test_redis_ping(redis_server: RedisServer) -> None:
    assert redis.Redis.from_url(redis_server.url()).ping()


def test_redis_restarts_after_kill(redis_server: RedisServer) -> None:
    redis_server.kill()
    redis_server.start()

    assert redis.Redis.from_url(redis_server.url()).ping()


def test_redis_kill_loses_keys(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url(db=3))
    client.set("lost", "1")

    redis_server.kill()
    redis_server.start()

    assert client.get("lost") is None


def test_s3_put_get() -> None:
    with S3Server() as server:
        server.create_bucket("round-trip")
        client = server.client()
        client.put_object(Bucket="round-trip", Key="a/b.txt", Body=b"payload")

        body = client.get_object(Bucket="round-trip", Key="a/b.txt")["Body"].read()

    assert body == b"payload"


def test_database_create_connects(postgres_admin_url: str) -> None:
    url = create_database(postgres_admin_url)
    try:
        name = scalar(url, "select current_database()")
    finally:
        drop_database(url)

    assert name == make_url(url).database


def test_database_drop_removes(postgres_admin_url: str) -> None:
    url = make_url(create_database(postgres_admin_url))
    # An open session must not block the drop.
    open_connection = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    )
    try:
        drop_database(url.render_as_string(hide_password=False))
    finally:
        open_connection.close()

    query = f"select count(*) from pg_database where datname = '{url.database}'"
    assert scalar(postgres_admin_url, query) == 0


def test_database_drop_rejects_foreign_name(postgres_admin_url: str) -> None:
    with pytest.raises(ValueError, match="will not drop"):
        drop_database(postgres_admin_url)


def test_database_create_rejects_bad_prefix(postgres_admin_url: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        create_database(postgres_admin_url, prefix="Bad-Prefix")


def test_shared_postgres_absent() -> None:
    assert shared_postgres_admin_url(port=free_port()) is None


def test_shared_redis_absent() -> None:
    assert shared_redis_url(11, port=free_port()) is None


def test_use_services_reaches_database(use_services: dict[str, str]) -> None:
    assert scalar(os.environ["HSCODE_DATABASE_URL"], "select 1") == 1


def test_use_services_reaches_broker(use_services: dict[str, str]) -> None:
    assert redis.Redis.from_url(os.environ["HSCODE_BROKER_URL"]).ping()


def test_use_services_reaches_bucket(use_services: dict[str, str]) -> None:
    bucket = os.environ["HSCODE_STORAGE_URL"].removeprefix("s3://")

    # boto3 reads the endpoint, keys and region from the environment alone.
    boto3.client("s3").put_object(Bucket=bucket, Key="probe", Body=b"1")

    assert boto3.client("s3").head_object(Bucket=bucket, Key="probe")


@pytest.fixture
def embedded_over_services(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Path:
    """Set service variables, then apply embedded_env, which must remove them."""
    monkeypatch.setenv("HSCODE_DATABASE_URL", "postgresql+psycopg2://x@127.0.0.1/x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")

    # Requesting embedded_env here fixes its order after the setenv calls.
    return request.getfixturevalue("embedded_env")


def test_embedded_env_clears_endpoint(embedded_over_services: Path) -> None:
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_embedded_env_clears_database(embedded_over_services: Path) -> None:
    assert "HSCODE_DATABASE_URL" not in os.environ


def test_embedded_env_sets_data_dir(embedded_env: Path) -> None:
    assert os.environ["HSCODE_DATA_DIR"] == str(embedded_env)
