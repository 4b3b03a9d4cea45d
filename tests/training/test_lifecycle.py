"""The model lifecycle against PostgreSQL, S3, Redis and a Celery worker.

Two refreshes on growing data, a worse candidate rejected, a running worker
following a promotion and a rollback between chunks, and the beat schedule
enqueueing a refresh.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import redis
from sqlalchemy import select

from db.ingest import ingest_manifest
from db.models import ModelVersion, Prediction, PromotionDecision, ScoringChunk
from db.registry import get_champion
from hscode.context import open_context
from tests.factories import write_manifest
from tests.worker.celery_process import ROOT, CeleryWorker
from training.promotion import promote_version, rollback
from training.refresh import refresh
from training.settings import load_train_settings
from worker.runs import create_run, pending_chunk_ids
from worker.tasks import queue_chunks

CHUNK_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def env(module_services_env):
    """Services with a database of this module's own, so counts start at zero."""
    values = {**module_services_env, "HSCODE_CHUNK_SIZE": "8"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield values


@pytest.fixture(scope="module")
def lifecycle(env, tmp_path_factory):
    """Refresh on 40 rows, grow to 100 rows and refresh, then force a worse one."""
    folder = tmp_path_factory.mktemp("lifecycle")
    ctx = open_context()
    ingest_manifest(ctx.sessions, ctx.store, write_manifest(folder / "a", 10))
    first = refresh(ctx.sessions, ctx.store, load_train_settings(
        epochs=2, validation_fraction=0.0))
    ingest_manifest(ctx.sessions, ctx.store, write_manifest(folder / "b", 25))
    second = refresh(ctx.sessions, ctx.store, load_train_settings(
        epochs=4, validation_fraction=0.0))
    worse = refresh(ctx.sessions, ctx.store, load_train_settings(
        epochs=1, learning_rate=1e-12, validation_fraction=0.0))
    return {"ctx": ctx, "first": first, "second": second, "worse": worse}


def test_first_refresh_becomes_champion(lifecycle):
    assert lifecycle["first"].decision.action == "first"


def test_second_refresh_trains_on_grown_data(lifecycle):
    first, second = lifecycle["first"], lifecycle["second"]
    assert second.version.metrics["train_count"] > first.version.metrics["train_count"]


def test_second_refresh_keeps_frozen_set(lifecycle):
    first, second = lifecycle["first"], lifecycle["second"]
    assert second.version.evaluation_set == first.version.evaluation_set
    assert (second.version.metrics["test"]["count"]
            == first.version.metrics["test"]["count"])


def test_second_refresh_promoted_only_when_better(lifecycle):
    decision = lifecycle["second"].decision
    gain = (decision.candidate_metrics["heading_accuracy"]
            - decision.champion_metrics["heading_accuracy"])
    assert (decision.action == "promote") == (gain >= 0.005)


def test_data_fingerprint_changes_with_data(lifecycle):
    first, second = lifecycle["first"], lifecycle["second"]
    assert first.version.data_fingerprint != second.version.data_fingerprint


def test_worse_candidate_rejected(lifecycle):
    assert lifecycle["worse"].decision.action == "reject"


def test_worse_candidate_reason_recorded(lifecycle):
    with lifecycle["ctx"].sessions() as session:
        decision = session.get(PromotionDecision, lifecycle["worse"].decision.id)
    assert "below the margin" in decision.reason
    assert decision.champion_metrics is not None


def test_worse_candidate_stays_candidate(lifecycle):
    with lifecycle["ctx"].sessions() as session:
        version = session.get(ModelVersion, lifecycle["worse"].version.id)
    assert version.status == "candidate"


def _wait_for_chunk(ctx, chunk_id: int) -> None:
    deadline = time.monotonic() + CHUNK_TIMEOUT_S
    while time.monotonic() < deadline:
        with ctx.sessions() as session:
            if session.get(ScoringChunk, chunk_id).status == "done":
                return
        time.sleep(0.5)
    raise AssertionError(f"chunk {chunk_id} not scored within {CHUNK_TIMEOUT_S}s")


def _versions_of_chunk(ctx, chunk_id: int) -> set[int]:
    with ctx.sessions() as session:
        ids = session.get(ScoringChunk, chunk_id).declaration_ids
        return set(session.scalars(
            select(Prediction.model_version_id)
            .where(Prediction.declaration_id.in_(ids))
        ))


@pytest.fixture(scope="module")
def switching(lifecycle, env, tmp_path_factory):
    """Score chunks one at a time while the champion changes under the worker."""
    ctx = lifecycle["ctx"]
    worker = CeleryWorker(env, tmp_path_factory.mktemp("worker") / "worker.log")
    worker.start()
    try:
        with ctx.sessions() as session, session.begin():
            run = create_run(session, 8, rescore=True)
            chunks = pending_chunk_ids(session, run.id)
            before = get_champion(session).id

        queue_chunks([chunks[0]])
        _wait_for_chunk(ctx, chunks[0])
        with ctx.sessions() as session, session.begin():
            promoted = promote_version(session, lifecycle["worse"].version.id,
                                       "test").champion_id
        queue_chunks([chunks[1]])
        _wait_for_chunk(ctx, chunks[1])
        with ctx.sessions() as session, session.begin():
            restored = rollback(session, "test").champion_id
        queue_chunks([chunks[2]])
        _wait_for_chunk(ctx, chunks[2])
    finally:
        worker.stop()
    return {"chunks": chunks, "before": before, "promoted": promoted,
            "restored": restored, "log": worker.log_tail(100)}


def test_worker_scores_with_champion(lifecycle, switching):
    ctx = lifecycle["ctx"]
    assert _versions_of_chunk(ctx, switching["chunks"][0]) == {switching["before"]}


def test_worker_follows_promotion(lifecycle, switching):
    ctx = lifecycle["ctx"]
    assert _versions_of_chunk(ctx, switching["chunks"][1]) == {switching["promoted"]}


def test_rollback_restores_previous_champion(switching):
    assert switching["restored"] == switching["before"]


def test_worker_follows_rollback(lifecycle, switching):
    ctx = lifecycle["ctx"]
    assert _versions_of_chunk(ctx, switching["chunks"][2]) == {switching["restored"]}


def test_worker_was_not_restarted(switching):
    assert switching["log"].count("ready.") == 1


BEAT_SCRIPT = """
import json
import os
from celery.beat import Scheduler
from worker.app import app
scheduler = Scheduler(app, lazy=False)
entry = scheduler.schedule["refresh-model"]
result = scheduler.apply_entry(entry, producer=None)
print(json.dumps({"task": entry.task, "queue": entry.options["queue"]}))
"""


def test_beat_schedule_enqueues_refresh(env, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete("train")
    output = subprocess.run(
        [sys.executable, "-c", BEAT_SCRIPT], cwd=ROOT, env=dict(os.environ),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    sent = json.loads(output.strip().splitlines()[-1])
    message = json.loads(client.lpop("train"))
    assert sent == {"task": "training.tasks.refresh_model", "queue": "train"}
    assert message["headers"]["task"] == "training.tasks.refresh_model"
