"""Scoring one chunk: claim, fetch photos, predict, write, mark done."""

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Declaration, ModelVersion, ScoringChunk, ScoringRun, utc_now
from db.photos import PhotoError, decode_photo
from db.registry import get_champion
from db.storage import ObjectNotFound, ObjectStore
from model.images import create_eval_transform
from model.inference import predict_probabilities
from model.predict import decode_predictions
from worker.predictions import record_failures, upsert_predictions
from worker.runtime import ModelCache
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

PENDING, DONE = "pending", "done"
RUN_QUEUED, RUN_RUNNING, RUN_DONE, RUN_CANCELLED = "queued", "running", "done", "cancelled"


@dataclass
class ScoringContext:
    """Database, store, model cache and settings of a scoring process."""

    sessions: sessionmaker[Session]
    store: ObjectStore
    models: ModelCache
    settings: WorkerSettings
    photo_pool: ThreadPoolExecutor
    worker_name: str = socket.gethostname()


@dataclass(frozen=True)
class ChunkResult:
    """Counts of one scored chunk."""

    chunk_id: int
    scored: int
    failed: int
    skipped: bool = False


@dataclass
class _Claim:
    run_id: int
    attempts: int
    version: ModelVersion
    declarations: list[tuple[int, str, str | None]]
    missing: list[int]


def score_chunk(context: ScoringContext, chunk_id: int) -> ChunkResult:
    """Score every declaration of a chunk; the chunk's writes commit together."""
    started = time.perf_counter()
    claim = _claim(context.sessions, chunk_id, context.worker_name)
    if claim is None:
        return ChunkResult(chunk_id, 0, 0, skipped=True)

    loaded = context.models.get(claim.version)
    failures = {d: ("load", "declaration not found") for d in claim.missing}
    photos = _fetch_photos(context, loaded.model, claim.declarations, failures)

    rows = [d for d in claim.declarations if d[0] not in failures]
    predictions = []
    if rows:
        probabilities = predict_probabilities(
            loaded.model, loaded.tokenizer, [d[1] for d in rows],
            [photos.get(d[0]) for d in rows] if photos is not None else None,
            max_tokens=context.settings.max_tokens, bf16=context.settings.bf16,
        )
        predictions = decode_predictions(probabilities, loaded.model.labels)

    now = utc_now()
    prediction_rows = [
        {"declaration_id": d[0], "model_version_id": claim.version.id,
         "heading": p.heading, "heading_probability": p.heading_probability,
         "subheading": p.subheading, "subheading_probability": p.subheading_probability,
         "top_k": p.top_k, "created_at": now}
        for d, p in zip(rows, predictions)
    ]
    _write(context.sessions, chunk_id, claim, prediction_rows, failures)

    seconds = time.perf_counter() - started
    logger.info(
        "chunk %d of run %d: scored %d, failed %d in %.2fs (%.0f declarations/s)",
        chunk_id, claim.run_id, len(prediction_rows), len(failures), seconds,
        len(claim.declarations) / seconds if seconds else 0.0,
    )
    return ChunkResult(chunk_id, len(prediction_rows), len(failures))


def _claim(sessions, chunk_id: int, worker_name: str) -> _Claim | None:
    with sessions() as session, session.begin():
        chunk = session.get(ScoringChunk, chunk_id, with_for_update=True)
        if chunk is None:
            logger.warning("chunk %d not found; its run was deleted", chunk_id)
            return None
        if chunk.status == DONE:
            logger.info("chunk %d already done; redelivered task skipped", chunk_id)
            return None
        run = session.get(ScoringRun, chunk.run_id)
        if run.status == RUN_CANCELLED:
            logger.info("chunk %d skipped: run %d is cancelled", chunk_id, run.id)
            return None

        chunk.attempts += 1
        chunk.started_at = utc_now()
        chunk.worker = worker_name
        if run.status == RUN_QUEUED:
            run.status = RUN_RUNNING
        # The champion is read per chunk, so workers follow a promotion or a
        # rollback between chunks without a restart.
        version = get_champion(session) or session.get(
            ModelVersion, run.model_version_id
        )
        ids = list(chunk.declaration_ids)
        found = session.execute(
            select(Declaration.id, Declaration.description, Declaration.image_key)
            .where(Declaration.id.in_(ids))
        ).all()
    present = {row[0] for row in found}
    missing = [i for i in ids if i not in present]
    return _Claim(run.id, chunk.attempts, version, [tuple(r) for r in found], missing)


def _fetch_photos(context, model, declarations, failures):
    """Fetch and preprocess photos on threads; failures are recorded per declaration."""
    if not model.config.uses_image:
        return None
    transform = create_eval_transform(model.config.image_size)

    def load(declaration):
        declaration_id, _, key = declaration
        if key is None:
            return declaration_id, None, None
        try:
            return declaration_id, transform(decode_photo(context.store.get(key))), None
        except (PhotoError, ObjectNotFound) as error:
            return declaration_id, None, ("photo", f"photo {key}: {error}")
        except (BotoCoreError, ClientError, OSError) as error:
            return declaration_id, None, ("photo", f"photo {key}: fetch failed: {error}")

    photos = {}
    for declaration_id, tensor, failure in context.photo_pool.map(load, declarations):
        if failure is not None:
            failures[declaration_id] = failure
            logger.warning("declaration %d: %s", declaration_id, failure[1])
        else:
            photos[declaration_id] = tensor
    return photos


def _write(sessions, chunk_id, claim: _Claim, prediction_rows, failures) -> None:
    with sessions() as session, session.begin():
        # Locking the run serialises chunk completions, so exactly one marks it done.
        run = session.get(ScoringRun, claim.run_id, with_for_update=True)
        chunk = session.get(ScoringChunk, chunk_id)
        if chunk.status == DONE:
            logger.info("chunk %d was finished by another worker meanwhile", chunk_id)
            return

        upsert_predictions(session, prediction_rows)
        record_failures(session, claim.run_id, failures, claim.attempts)
        chunk.status = DONE
        chunk.scored = len(prediction_rows)
        chunk.failed = len(failures)
        chunk.finished_at = utc_now()
        session.flush()

        pending = session.scalar(
            select(func.count()).select_from(ScoringChunk).where(
                ScoringChunk.run_id == run.id, ScoringChunk.status != DONE
            )
        )
        if pending == 0 and run.status != RUN_CANCELLED:
            run.status = RUN_DONE
            run.finished_at = utc_now()
            logger.info("run %d done", run.id)
