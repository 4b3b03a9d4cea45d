"""Worker crashes, service restarts and store outages during real scoring runs.

The module starts PostgreSQL, Redis and moto S3 of its own, trains one small
weighted model, and scores each fault's declarations (a source of their own)
through Celery worker processes.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from sqlalchemy import func, select, update

from db.models import Declaration, ScoringChunk, ScoringFailure, ScoringRun
from db.storage import S3Store
from hscode.cli import main
from hscode.context import CommandContext, open_context
from tests.reliability.conftest import (
    BUCKET,
    Outcome,
    environment,
    ingest_source,
    outcome,
    progress_of,
    train_model,
    wait_for,
    wait_until_done,
)
from tests.reliability.store_proxy import FailingStoreProxy
from tests.services import free_port
from tests.worker.celery_process import ROOT, CeleryWorker
from worker.runs import create_run, pending_chunk_ids
from worker.scoring import PENDING, TransientStoreError, score_chunk
from worker.tasks import queue_chunks

CHUNK_SIZE = 4
PER_HEADING = 12
"""48 declarations per fault, 12 chunks of 4."""
VISIBILITY_TIMEOUT_S = 5
RUN_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def env(stack) -> Iterator[dict[str, str]]:
    """The module's services, small chunks and a short visibility timeout."""
    values = {
        **stack.env,
        "HSCODE_CHUNK_SIZE": str(CHUNK_SIZE),
        "HSCODE_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
        "HSCODE_PHOTO_THREADS": "4",
    }
    with environment(values):
        yield values


@pytest.fixture(scope="module")
def model(env, tmp_path_factory) -> tuple[CommandContext, int]:
    """Train the module's weighted model; return a context and its version id."""
    ctx = open_context()
    version = train_model(ctx, tmp_path_factory.mktemp("train"), "weighted")
    return ctx, version.id


@contextmanager
def workers(env: dict[str, str], folder: Path, *names: str) -> Iterator[list]:
    """Yield unstarted Celery workers with logs of their own; stop them after."""
    started = [CeleryWorker(env, folder / f"{name}.log", name) for name in names]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def queue_run(ctx: CommandContext, source: str, chunk_size: int = CHUNK_SIZE) -> int:
    """Create a run over a source's unscored declarations and queue its chunks."""
    with ctx.sessions() as session, session.begin():
        run_id = create_run(session, chunk_size, source).id
        chunk_ids = pending_chunk_ids(session, run_id)
    queue_chunks(chunk_ids)
    return run_id


def claimed_chunk(ctx: CommandContext, run_id: int) -> int | None:
    """Return a chunk that a worker claimed but has not finished, if any."""
    with ctx.sessions() as session:
        return session.scalar(
            select(ScoringChunk.id)
            .where(
                ScoringChunk.run_id == run_id,
                ScoringChunk.status == PENDING,
                ScoringChunk.attempts > 0,
            )
            .limit(1)
        )


def pause_holding_a_chunk(
    ctx: CommandContext, worker: CeleryWorker, run_id: int, timeout: float
) -> int | None:
    """Freeze the worker while it has a claimed chunk; return that chunk.

    A chunk of four declarations can finish between seeing it claimed and a
    kill, so the worker is paused first and the claim checked again.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if claimed_chunk(ctx, run_id) is not None:
            worker.pause()
            held = claimed_chunk(ctx, run_id)
            if held is not None:
                return held
            worker.resume()
        time.sleep(0.02)
    return None


def chunks_done(ctx: CommandContext, run_id: int, count: int) -> bool:
    """Return whether at least `count` chunks of a run are done."""
    return progress_of(ctx, run_id).chunks_done >= count


def report(fault: str, injected: int, result: Outcome) -> None:
    """Print one line of fault-injection results for the reliability notes."""
    print(
        f"\nFAULT {fault}: injected {injected}, declarations {result.declarations}, "
        f"scored {result.scored}, lost {result.lost}, duplicates {result.duplicates}"
    )


def test_app_delivery_settings() -> None:
    script = (
        "import json; from worker.app import app; c = app.conf; print(json.dumps("
        "[c.task_acks_late, c.task_reject_on_worker_lost, "
        "c.worker_prefetch_multiplier, c.broker_transport_options]))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HSCODE_VISIBILITY_TIMEOUT": "7"},
        check=True,
    ).stdout
    acks_late, reject_lost, prefetch, options = json.loads(output)

    assert acks_late is True
    assert reject_lost is True
    assert prefetch == 1
    assert options["visibility_timeout"] == 7
    assert options["unacked_restore_interval"] == 7


def test_redelivered_done_chunk_skipped(model, tmp_path) -> None:
    ctx, _ = model
    ingest_source(ctx, tmp_path, "redelivery", per_heading=2)
    with ctx.sessions() as session, session.begin():
        run_id = create_run(session, 100, "redelivery").id
        (chunk_id,) = pending_chunk_ids(session, run_id)
    score_chunk(ctx.scoring, chunk_id)

    again = score_chunk(ctx.scoring, chunk_id)

    assert again.skipped is True
    assert progress_of(ctx, run_id).scored == 8


def test_rescored_chunk_upserts(model, tmp_path) -> None:
    ctx, version_id = model
    ingest_source(ctx, tmp_path, "upsert", per_heading=2)
    with ctx.sessions() as session, session.begin():
        run_id = create_run(session, 100, "upsert").id
        (chunk_id,) = pending_chunk_ids(session, run_id)
    score_chunk(ctx.scoring, chunk_id)
    # A second worker that missed the first one's write scores it again.
    with ctx.sessions() as session, session.begin():
        session.execute(
            update(ScoringChunk)
            .where(ScoringChunk.id == chunk_id)
            .values(status=PENDING)
        )

    score_chunk(ctx.scoring, chunk_id)
    result = outcome(ctx.sessions, "upsert", version_id)

    assert result.duplicates == 0
    assert progress_of(ctx, run_id).scored == result.declarations


def dead_store() -> S3Store:
    """Return a store whose endpoint refuses connections, as when S3 is down."""
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    return S3Store(BUCKET, client=client)


def test_store_down_retries_chunk(model, tmp_path) -> None:
    ctx, _ = model
    ingest_source(ctx, tmp_path, "store-down", per_heading=2)
    with ctx.sessions() as session, session.begin():
        (chunk_id,) = pending_chunk_ids(
            session, create_run(session, 100, "store-down").id
        )
    context = dataclasses.replace(ctx.scoring, store=dead_store())

    with pytest.raises(TransientStoreError, match="the store failed 3 times"):
        score_chunk(context, chunk_id, final_attempt=False)


def test_store_down_final_attempt_records_failures(model, tmp_path) -> None:
    ctx, version_id = model
    ingest_source(ctx, tmp_path, "store-final", per_heading=2)
    with ctx.sessions() as session, session.begin():
        run_id = create_run(session, 100, "store-final").id
        (chunk_id,) = pending_chunk_ids(session, run_id)
    context = dataclasses.replace(ctx.scoring, store=dead_store())

    result = score_chunk(context, chunk_id, final_attempt=True)
    with ctx.sessions() as session:
        failures = session.scalars(
            select(ScoringFailure).where(ScoringFailure.run_id == run_id)
        ).all()

    assert result.failed == photo_count(ctx, "store-final")
    assert result.scored == 8 - result.failed
    assert {f.stage for f in failures} == {"photo"}
    assert all("the store failed 3 times" in f.error for f in failures)


def photo_count(ctx: CommandContext, source: str) -> int:
    """Return how many declarations of a source have a photo."""
    with ctx.sessions() as session:
        return session.scalar(
            select(func.count())
            .select_from(Declaration)
            .where(Declaration.source == source, Declaration.image_key.is_not(None))
        )


def test_worker_killed_mid_chunk_loses_nothing(env, model, tmp_path) -> None:
    ctx, version_id = model
    ingest_source(ctx, tmp_path, "kill", PER_HEADING)
    with workers(env, tmp_path, "first", "second") as (first, second):
        first.start()
        run_id = queue_run(ctx, "kill")
        wait_for(lambda: chunks_done(ctx, run_id, 2), 90, "two chunks done")
        interrupted = pause_holding_a_chunk(ctx, first, run_id, 30)
        first.kill()
        second.start()
        progress = wait_until_done(ctx, run_id, RUN_TIMEOUT_S)
    result = outcome(ctx.sessions, "kill", version_id)
    report("worker SIGKILL mid-chunk", 1, result)

    assert interrupted is not None
    assert progress.scored == result.declarations
    assert result.lost == 0
    assert result.duplicates == 0


def test_postgres_restart_loses_nothing(stack, env, model, tmp_path) -> None:
    ctx, version_id = model
    ingest_source(ctx, tmp_path, "postgres-restart", PER_HEADING)
    command = [
        sys.executable,
        "-m",
        "hscode",
        "score",
        "--source",
        "postgres-restart",
        "--wait",
    ]
    with workers(env, tmp_path, "pg") as (worker,):
        worker.start()
        cli = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            run_id = wait_for(
                lambda: run_of_source(ctx, "postgres-restart"), 60, "the run to start"
            )
            wait_for(lambda: chunks_done(ctx, run_id, 2), 90, "two chunks done")
            stack.postgres.restart()
            output, _ = cli.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            cli.kill()
            cli.wait()
    result = outcome(ctx.sessions, "postgres-restart", version_id)
    report("PostgreSQL restart", 1, result)

    assert cli.returncode == 0, output
    assert f"run {run_id} done" in output
    assert result.lost == 0
    assert result.duplicates == 0


def run_of_source(ctx: CommandContext, source: str) -> int | None:
    """Return the id of the newest run over a source, once it exists."""
    with ctx.sessions() as session:
        return session.scalar(
            select(ScoringRun.id)
            .where(ScoringRun.source == source)
            .order_by(ScoringRun.id.desc())
            .limit(1)
        )


def stalled(ctx: CommandContext, run_id: int, quiet_s: float = 4.0) -> bool:
    """Return whether a run made no progress for `quiet_s` seconds."""
    before = progress_of(ctx, run_id).chunks_done
    wait_for(lambda: True, 1, "nothing")
    try:
        wait_for(
            lambda: progress_of(ctx, run_id).chunks_done != before, quiet_s, "progress"
        )
    except AssertionError:
        return True
    return False


def test_redis_restart_resume_loses_nothing(stack, env, model, tmp_path) -> None:
    ctx, version_id = model
    ingest_source(ctx, tmp_path, "redis-restart", PER_HEADING)
    with workers(env, tmp_path, "redis") as (worker,):
        worker.start()
        run_id = queue_run(ctx, "redis-restart")
        wait_for(lambda: chunks_done(ctx, run_id, 2), 90, "two chunks done")
        stack.redis.restart()
        wait_for(lambda: stalled(ctx, run_id), 60, "the run to stall")
        before_resume = progress_of(ctx, run_id)
        status = main(["score", "--resume", str(run_id), "--wait"])
    result = outcome(ctx.sessions, "redis-restart", version_id)
    report("Redis restart (queue lost) + --resume", 1, result)

    assert not before_resume.finished
    assert status == 0
    assert result.lost == 0
    assert result.duplicates == 0


def test_store_outage_retried_then_scored(stack, env, model, tmp_path) -> None:
    ctx, version_id = model
    ingest_source(ctx, tmp_path, "store-outage", PER_HEADING)
    with FailingStoreProxy(stack.s3.endpoint_url, "/photos/sha256/") as proxy:
        worker_env = {
            **env,
            "AWS_ENDPOINT_URL": proxy.endpoint_url,
            "AWS_MAX_ATTEMPTS": "1",
        }
        with workers(worker_env, tmp_path, "store") as (worker,):
            proxy.failing.set()
            worker.start()
            run_id = queue_run(ctx, "store-outage")
            wait_for(
                lambda: "retrying with backoff" in log_text(worker),
                90,
                "a chunk task retried after the store failed",
            )
            proxy.failing.clear()
            progress = wait_until_done(ctx, run_id, RUN_TIMEOUT_S)
            log = log_text(worker)
    result = outcome(ctx.sessions, "store-outage", version_id)
    report(f"S3 503 answers ({proxy.failures} requests)", proxy.failures, result)

    assert proxy.failures > 0
    assert "transient store error on attempt 1 of 3" in log
    assert progress.failed == 0
    assert result.lost == 0
    assert result.duplicates == 0


def log_text(worker: CeleryWorker) -> str:
    """Return a worker's whole log."""
    return worker.log_path.read_text(errors="replace")
