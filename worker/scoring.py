"""Scoring one chunk: claim, fetch photos, predict, write, mark done."""

import logging
import re
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Declaration, ModelVersion, ScoringChunk, ScoringRun, utc_now
from db.photos import PhotoError, decode_photo
from db.registry import get_champion
from db.storage import ObjectNotFound, ObjectStore
from model.evidence import evidence_for_rows
from model.images import create_eval_transform
from model.inference import plan_batches, predict_probabilities
from model.inputs import micro_batch_limits
from model.predict import decode_predictions
from worker.predictions import record_failures, upsert_predictions
from worker.runtime import ModelCache
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

PENDING, DONE = "pending", "done"
RUN_QUEUED, RUN_RUNNING, RUN_DONE, RUN_CANCELLED = "queued", "running", "done", "cancelled"

PHOTO_FETCH_ATTEMPTS = 3
"""Tries of one photo within a chunk before the chunk task itself is retried."""
PREFETCH_PER_THREAD = 4
"""Photos each fetch thread may have ready or in progress ahead of the model."""
PHOTO_RETRY_BASE_S = 0.5
"""Wait before the second try of a photo; it doubles with each further try."""
# Ingest stores photos only under their SHA-256, so any other key is refused
# before it reaches the store (for example '../../etc/passwd').
PHOTO_KEY = re.compile(r"photos/sha256/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z]{3,4}")
_TRANSIENT_S3_CODES = {
    "InternalError", "RequestTimeout", "ServiceUnavailable", "SlowDown",
    "Throttling", "ThrottlingException",
}


class TransientStoreError(RuntimeError):
    """The object store kept failing with a transient error; retry the chunk later."""


def is_transient_store_error(error: BaseException) -> bool:
    """Return whether a store error may pass on its own (timeout, refused, 5xx)."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "")
        return status >= 500 or status == 429 or code in _TRANSIENT_S3_CODES
    return isinstance(error, (
        BotoConnectionError, HTTPClientError, IncompleteReadError,
        ConnectionError, TimeoutError,
    ))


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


def score_chunk(
    context: ScoringContext, chunk_id: int, *, final_attempt: bool = True
) -> ChunkResult:
    """Score every declaration of a chunk; the chunk's writes commit together.

    A photo the store keeps failing to serve raises TransientStoreError, so
    the chunk is tried again later, unless this is its `final_attempt`: then
    that declaration is recorded as failed and the rest are scored.
    """
    started = time.perf_counter()
    claim = _claim(context.sessions, chunk_id, context.worker_name)
    if claim is None:
        return ChunkResult(chunk_id, 0, 0, skipped=True)

    loaded = context.models.get(claim.version)
    failures = {d: ("load", "declaration not found") for d in claim.missing}
    rows = claim.declarations
    predictions, evidence = [], []
    if rows:
        settings = context.settings
        plan = plan_batches(loaded.model, loaded.tokenizer, [d[1] for d in rows],
                            [d[2] is not None for d in rows],
                            max_tokens=settings.max_tokens,
                            max_photos=settings.max_photos)
        photos = _fetch_photos(context, loaded.model, chunk_id, claim, failures,
                               final_attempt, plan.row_order)
        try:
            # The text embeddings come from the same forward pass as the logits.
            probabilities = predict_probabilities(
                loaded.model, loaded.tokenizer, [d[1] for d in rows], photos,
                bf16=settings.bf16, bf16_cpu=settings.bf16_cpu, plan=plan,
                text_embeddings=loaded.evidence is not None,
            )
        finally:
            if photos is not None:
                photos.cancel()
        # A row whose photo failed was scored with the missing-photo
        # placeholder; its prediction is dropped and its failure recorded.
        fetched = [i for i, d in enumerate(rows) if d[0] not in failures]
        if len(fetched) < len(rows):
            probabilities = probabilities.select(fetched)
            rows = [rows[i] for i in fetched]
        predictions = decode_predictions(probabilities, loaded.model.labels)
        evidence = evidence_for_rows(
            loaded.evidence, probabilities.text_embeddings, [d[0] for d in rows],
            predictions, loaded.model.labels.names,
        )

    now = utc_now()
    prediction_rows = [
        {"declaration_id": d[0], "model_version_id": claim.version.id,
         "heading": p.heading, "heading_probability": p.heading_probability,
         "subheading": p.subheading, "subheading_probability": p.subheading_probability,
         "top_k": p.top_k, "evidence": e, "created_at": now}
        for d, p, e in zip(rows, predictions, evidence)
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


def _fetch_photos(context, model, chunk_id, claim, failures, final_attempt, order):
    """Start fetching and preprocessing the chunk's photos on threads.

    Photos are fetched in `order`, the order the forward passes read them,
    and a failure is recorded per declaration as its row is read.
    """
    if not model.config.uses_image:
        return None
    transform = create_eval_transform(model.config.image_size)
    size = model.config.image_size
    where = f"chunk {chunk_id} of run {claim.run_id}"

    def load(declaration):
        declaration_id, _, key = declaration
        if key is None:
            return None, None
        if not PHOTO_KEY.fullmatch(key):
            return None, ("photo", (
                f"photo key {key[:80]!r} is not a content-addressed photo key "
                "(photos/sha256/...); ingest the photo again"
            ))
        try:
            data = _get_photo(context.store, key, f"{where}: declaration {declaration_id}")
            return transform(decode_photo(data, size)), None
        except ObjectNotFound:
            return None, ("photo", (
                f"photo {key}: not found in the store; ingest the photo again"
            ))
        except PhotoError as error:
            return None, ("photo", f"photo {key}: {error}")
        except TransientStoreError as error:
            if not final_attempt:
                raise
            return None, ("photo", str(error))
        except (BotoCoreError, ClientError, OSError) as error:
            return None, ("photo", f"photo {key}: fetch failed: {error}")

    _, max_photos = micro_batch_limits(context.models.device)
    window = max(2 * (context.settings.max_photos or max_photos),
                 PREFETCH_PER_THREAD * context.settings.photo_threads)
    return _PendingPhotos(context.photo_pool, load, claim.declarations, order,
                          window, failures, where)


class _PendingPhotos(Sequence):
    """The chunk's photos as they arrive: reading a row waits for its photo.

    Fetches run at most `window` rows ahead of the row read last, so memory
    contains a few micro-batches of decoded photos, not the whole chunk's. A
    photo that failed reads as None, the missing-photo placeholder, and its
    declaration goes into `failures`.
    """

    def __init__(self, pool, load, declarations, order, window, failures, where):
        self._pool = pool
        self._load = load
        self._declarations = declarations
        self._order = order
        self._position = {row: i for i, row in enumerate(order)}
        self._window = window
        self._futures = {}
        self._submitted = 0
        self._failures = failures
        self._where = where
        self._submit_through(0)

    def __len__(self) -> int:
        return len(self._declarations)

    def _submit_through(self, position: int) -> None:
        last = min(len(self._order), position + self._window)
        while self._submitted < last:
            row = self._order[self._submitted]
            self._futures[row] = self._pool.submit(self._load, self._declarations[row])
            self._submitted += 1

    def __getitem__(self, row):
        self._submit_through(self._position[row])
        # Popping the future frees the decoded photo once the batch is stacked.
        tensor, failure = self._futures.pop(row).result()
        if failure is not None:
            declaration_id = self._declarations[row][0]
            self._failures[declaration_id] = failure
            logger.warning("%s: declaration %d: %s", self._where, declaration_id,
                           failure[1])
        return tensor

    def cancel(self) -> None:
        """Cancel the fetches not yet started, after a forward pass failed."""
        for future in self._futures.values():
            future.cancel()


def _get_photo(store: ObjectStore, key: str, where: str) -> bytes:
    """Read a photo, trying again with backoff while the store errs transiently."""
    attempt = 1
    while True:
        try:
            return store.get(key)
        except Exception as error:
            if not is_transient_store_error(error):
                raise
            if attempt == PHOTO_FETCH_ATTEMPTS:
                logger.warning("%s: photo %s: store still failing after %d "
                               "attempts: %s", where, key, attempt, error)
                raise TransientStoreError(
                    f"photo {key}: the store failed {attempt} times: {error}"
                ) from error
            delay = PHOTO_RETRY_BASE_S * 2 ** (attempt - 1)
            logger.warning("%s: photo %s: transient store error on attempt %d of "
                           "%d (%s); retrying in %.1f s", where, key, attempt,
                           PHOTO_FETCH_ATTEMPTS, error, delay)
            time.sleep(delay)
            attempt += 1


def _write(sessions, chunk_id, claim: _Claim, prediction_rows, failures) -> None:
    with sessions() as session, session.begin():
        # Locking the run serialises chunk completions, so exactly one marks it done.
        run = session.get(ScoringRun, claim.run_id, with_for_update=True)
        chunk = session.get(ScoringChunk, chunk_id)
        if chunk.status == DONE:
            logger.info("chunk %d of run %d was finished by another worker "
                        "meanwhile", chunk_id, run.id)
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
