"""Services of the reliability tests' own, a trained model, and run checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.ingest import ingest_manifest
from db.models import Declaration, ModelVersion, Prediction
from hscode.context import CommandContext
from tests.factories import write_manifest
from tests.services import (
    S3_ACCESS_KEY,
    S3_REGION,
    S3_SECRET_KEY,
    PostgresServer,
    RedisServer,
    S3Server,
    create_database,
)
from training.refresh import refresh
from training.settings import load_train_settings
from worker.runs import RunProgress, run_progress

BUCKET = "hscode-reliability"
T = TypeVar("T")


@dataclass
class Stack:
    """PostgreSQL, Redis and S3 servers started for one test module."""

    postgres: PostgresServer
    redis: RedisServer
    s3: S3Server
    env: dict[str, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start PostgreSQL, Redis and moto S3 of the module's own on free ports.

    The tests kill and restart these, never the machine's shared servers.
    """
    postgres, redis_server, s3 = PostgresServer(), RedisServer(), S3Server()
    try:
        postgres.start()
        redis_server.start()
        s3.start()
        s3.create_bucket(BUCKET)
        env = {
            "HSCODE_DATABASE_URL": create_database(postgres.url()),
            "HSCODE_BROKER_URL": redis_server.url(0),
            "HSCODE_STORAGE_URL": f"s3://{BUCKET}",
            "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("reliability-data")),
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": S3_REGION,
            "AWS_ENDPOINT_URL": s3.endpoint_url,
        }
        yield Stack(postgres, redis_server, s3, env)
    finally:
        s3.stop()
        redis_server.close()
        postgres.close()


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set variables in os.environ for the duration of a with block."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def train_model(ctx: CommandContext, folder: Path, fusion: str) -> ModelVersion:
    """Ingest a small manifest with photos and train a one-epoch champion."""
    manifest = write_manifest(folder, per_heading=10, photo_every=2)
    ingest_manifest(ctx.sessions, ctx.store, manifest, source="training")
    settings = load_train_settings(
        fusion=fusion, epochs=1, image_size=64, validation_fraction=0.0
    )
    return refresh(ctx.sessions, ctx.store, settings).version


def ingest_source(
    ctx: CommandContext, folder: Path, source: str, per_heading: int
) -> int:
    """Ingest a manifest with a photo on every third row; return its row count."""
    manifest = write_manifest(folder / source, per_heading=per_heading, photo_every=3)
    return ingest_manifest(ctx.sessions, ctx.store, manifest, source=source).inserted


@dataclass(frozen=True)
class Outcome:
    """How a source's declarations came out of a run."""

    declarations: int
    scored: int
    lost: int
    duplicates: int


def outcome(sessions: sessionmaker[Session], source: str, version_id: int) -> Outcome:
    """Count a source's declarations with no, one or several predictions."""
    with sessions() as session:
        ids = set(
            session.scalars(select(Declaration.id).where(Declaration.source == source))
        )
        per_declaration = dict(
            session.execute(
                select(Prediction.declaration_id, func.count())
                .where(
                    Prediction.declaration_id.in_(ids),
                    Prediction.model_version_id == version_id,
                )
                .group_by(Prediction.declaration_id)
            ).all()
        )
    return Outcome(
        declarations=len(ids),
        scored=len(per_declaration),
        lost=len(ids - set(per_declaration)),
        duplicates=sum(count - 1 for count in per_declaration.values()),
    )


def wait_for(check: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `check` until it returns a true value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def progress_of(ctx: CommandContext, run_id: int) -> RunProgress:
    """Return a run's progress as the database shows it now."""
    with ctx.sessions() as session:
        return run_progress(session, run_id)


def wait_until_done(ctx: CommandContext, run_id: int, timeout: float) -> RunProgress:
    """Wait until every chunk of a run is done; return its final progress."""
    return wait_for(
        lambda: (p := progress_of(ctx, run_id)).finished and p,
        timeout,
        f"run {run_id} to finish",
    )
