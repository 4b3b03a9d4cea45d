"""Celery tasks; the embedded mode calls the same functions in-process."""

import logging
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError
from sqlalchemy.exc import OperationalError

from sqlalchemy.orm import Session, sessionmaker

from db.engine import create_db_engine, create_session_factory
from db.settings import DbSettings, load_db_settings
from db.storage import ObjectStore, create_store
from worker.app import app
from worker.runtime import ModelCache
from worker.scoring import ScoringContext, score_chunk
from worker.settings import WorkerSettings, load_worker_settings

logger = logging.getLogger(__name__)

_context: ScoringContext | None = None

TRANSIENT_ERRORS = (OperationalError, BotoCoreError, ConnectionError, TimeoutError)
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
    """Score one chunk of a run."""
    if self.request.retries:
        logger.warning("chunk %d: attempt %d after a transient error",
                       chunk_id, self.request.retries + 1)
    result = score_chunk(get_context(), chunk_id)
    return {"chunk_id": chunk_id, "scored": result.scored, "failed": result.failed}
