"""Celery tasks; the embedded mode calls the same functions in-process."""

import logging
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import create_db_engine, create_session_factory
from db.settings import DbSettings, load_db_settings
from db.storage import ObjectStore, create_store
from worker.app import app
from worker.runs import create_run, find_active_run, pending_chunk_ids
from worker.runtime import ModelCache
from worker.scoring import (
    ScoringContext,
    TransientStoreError,
    is_transient_store_error,
    score_chunk,
)
from worker.settings import WorkerSettings, load_worker_settings

logger = logging.getLogger(__name__)

_context: ScoringContext | None = None

TRANSIENT_ERRORS = (
    OperationalError, InterfaceError, BotoCoreError, TransientStoreError,
    ConnectionError, TimeoutError,
)
"""Errors retried with exponential backoff: the database or store is unreachable."""
MAX_RETRIES = 8


def create_scoring_context(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    db_settings: DbSettings,
    settings: WorkerSettings,
) -> ScoringContext:
    """Assemble a scoring context from an open database and store."""
    return ScoringContext(
        sessions=sessions,
        store=store,
        models=ModelCache(store, db_settings.data_dir, settings.device),
        settings=settings,
        photo_pool=ThreadPoolExecutor(settings.photo_threads, "photos"),
    )


def get_context() -> ScoringContext:
    """Return this worker process's scoring context, creating it on first use."""
    global _context
    if _context is None:
        db_settings = load_db_settings()
        _context = create_scoring_context(
            create_session_factory(create_db_engine(db_settings)),
            create_store(db_settings),
            db_settings,
            load_worker_settings(),
        )
    return _context


def reset_context() -> None:
    """Forget the context, so a forked process builds its own."""
    global _context
    _context = None


@app.task(
    name="worker.tasks.score_chunk",
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
)
def score_chunk_task(self, chunk_id: int) -> dict:
    """Score one chunk of a run; transient errors retry it with backoff."""
    attempt = self.request.retries + 1
    if self.request.retries:
        logger.warning("chunk %d: attempt %d of %d after a transient error",
                       chunk_id, attempt, MAX_RETRIES + 1)
    try:
        result = score_chunk(get_context(), chunk_id,
                             final_attempt=self.request.retries >= MAX_RETRIES)
    except TRANSIENT_ERRORS as error:
        _log_transient(chunk_id, attempt, error)
        raise
    except ClientError as error:
        # A 5xx from the store (say while loading weights) passes like a timeout.
        if not is_transient_store_error(error):
            raise
        _log_transient(chunk_id, attempt, error)
        raise TransientStoreError(f"chunk {chunk_id}: store error: {error}") from error
    return {"chunk_id": chunk_id, "scored": result.scored, "failed": result.failed}


def _log_transient(chunk_id: int, attempt: int, error: BaseException) -> None:
    """Log a transient error of a chunk task before Celery retries it."""
    if attempt > MAX_RETRIES:
        logger.error("chunk %d: attempt %d failed with %s: %s; no retry left, "
                     "queue the chunk again with `hscode score --resume RUN`",
                     chunk_id, attempt, type(error).__name__, error)
        return
    logger.warning("chunk %d: attempt %d failed with %s: %s; retrying with backoff",
                   chunk_id, attempt, type(error).__name__, error)


def queue_chunks(chunk_ids: list[int]) -> None:
    """Send one scoring task per chunk to the broker of the current settings.

    The connection is opened from `HSCODE_BROKER_URL` as read now, not as it
    was when this module was first imported.
    """
    broker_url = load_worker_settings().broker_url
    with app.connection_for_write(url=broker_url) as connection:
        for chunk_id in chunk_ids:
            score_chunk_task.apply_async((chunk_id,), connection=connection)


@app.task(name="worker.tasks.score_new_declarations")
def score_new_declarations() -> dict:
    """Score every declaration without a champion prediction (the nightly run).

    A run still queued or running is resumed instead of starting a second
    one, which also recovers chunks whose tasks a Redis restart lost.
    """
    context = get_context()
    with context.sessions() as session, session.begin():
        active = find_active_run(session)
        if active is None:
            run = create_run(session, context.settings.chunk_size)
            run_id, resumed = run.id, False
        else:
            run_id, resumed = active.id, True
        chunk_ids = pending_chunk_ids(session, run_id)
    queue_chunks(chunk_ids)
    logger.info("scheduled scoring: %s run %d, queued %d chunks",
                "resumed" if resumed else "started", run_id, len(chunk_ids))
    return {"run_id": run_id, "resumed": resumed, "chunks": len(chunk_ids)}
