"""Scoring runs: which declarations to score, their chunks, and progress counts."""

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import (
    Declaration,
    Prediction,
    ScoringChunk,
    ScoringFailure,
    ScoringRun,
)
from db.registry import get_champion
from worker.scoring import DONE, PENDING, RUN_DONE, RUN_QUEUED, RUN_RUNNING

logger = logging.getLogger(__name__)


class NoChampionError(RuntimeError):
    """No model version is champion, so nothing can be scored."""


@dataclass(frozen=True)
class RunProgress:
    """Counts of a scoring run, computed from its chunks."""

    run_id: int
    status: str
    total: int
    scored: int
    failed: int
    chunks: int
    chunks_done: int

    @property
    def finished(self) -> bool:
        return self.chunks_done == self.chunks


def create_run(
    session: Session,
    chunk_size: int,
    source: str | None = None,
    rescore: bool = False,
    retry_failed: bool = False,
) -> ScoringRun:
    """Create a run over the declarations that lack a champion prediction.

    With `rescore`, every declaration (of the source) is scored again; with
    `retry_failed`, only those whose latest failure no champion prediction
    followed.
    """
    champion = get_champion(session)
    if champion is None:
        raise NoChampionError("no champion model; run `hscode train` first")

    # Chunks of declarations of similar length pad their micro-batches as
    # little as one sort over the whole run would.
    query = select(Declaration.id).order_by(
        func.length(Declaration.description), Declaration.id
    )
    if source is not None:
        query = query.where(Declaration.source == source)
    if retry_failed:
        query = query.where(Declaration.id.in_(unresolved_failures(champion.id)))
    elif not rescore:
        scored = select(Prediction.declaration_id).where(
            Prediction.model_version_id == champion.id
        )
        query = query.where(Declaration.id.not_in(scored))
    ids = list(session.scalars(query))

    run = ScoringRun(source=source, model_version_id=champion.id, total=len(ids))
    session.add(run)
    session.flush()
    chunks = [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]
    session.add_all(
        ScoringChunk(run_id=run.id, declaration_ids=chunk, status=PENDING)
        for chunk in chunks
    )
    run.chunk_count = len(chunks)
    if not chunks:
        run.status = RUN_DONE
        run.finished_at = run.created_at
    session.flush()
    logger.info(
        "run %d: %d declarations in %d chunks for model version %d",
        run.id, len(ids), len(chunks), champion.id,
    )
    return run


def unresolved_failures(champion_id: int):
    """Select the declarations whose latest failure no champion prediction followed."""
    latest = (
        select(ScoringFailure.declaration_id,
               func.max(ScoringFailure.failed_at).label("failed_at"))
        .group_by(ScoringFailure.declaration_id)
        .subquery()
    )
    scored_after = select(Prediction.declaration_id).where(
        Prediction.declaration_id == latest.c.declaration_id,
        Prediction.model_version_id == champion_id,
        Prediction.created_at > latest.c.failed_at,
    )
    return select(latest.c.declaration_id).where(~scored_after.exists())


def find_active_run(session: Session) -> ScoringRun | None:
    """Return the oldest run over all sources that is still queued or running."""
    return session.scalar(
        select(ScoringRun)
        .where(ScoringRun.status.in_((RUN_QUEUED, RUN_RUNNING)),
               ScoringRun.source.is_(None))
        .order_by(ScoringRun.id)
        .limit(1)
    )


def pending_chunk_ids(session: Session, run_id: int) -> list[int]:
    """Return the ids of a run's chunks that are not done."""
    return list(session.scalars(
        select(ScoringChunk.id).where(
            ScoringChunk.run_id == run_id, ScoringChunk.status != DONE
        ).order_by(ScoringChunk.id)
    ))


def run_progress(session: Session, run_id: int) -> RunProgress:
    """Return a run's counts; they stay true when a task is delivered twice."""
    run = session.get(ScoringRun, run_id)
    if run is None:
        raise LookupError(f"scoring run {run_id} not found")
    scored, failed, done = session.execute(
        select(
            func.coalesce(func.sum(ScoringChunk.scored), 0),
            func.coalesce(func.sum(ScoringChunk.failed), 0),
            func.count(),
        ).where(ScoringChunk.run_id == run_id, ScoringChunk.status == DONE)
    ).one()
    return RunProgress(run.id, run.status, run.total, scored, failed,
                       run.chunk_count, done)
