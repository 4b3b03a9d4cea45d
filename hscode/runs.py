"""Run summaries and cancellation for `hscode score`."""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from db.models import ScoringFailure, ScoringRun, utc_now
from hscode.export import ID_QUERY_ROWS, run_declaration_ids
from worker.runs import run_progress
from worker.scoring import RUN_CANCELLED, RUN_DONE

_REVIEW_COUNTS = text(
    "SELECT "
    "COALESCE(SUM(CASE WHEN flagged THEN 1 ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN needs_review THEN 1 ELSE 0 END), 0) "
    "FROM latest_predictions WHERE declaration_id IN :ids"
).bindparams(bindparam("ids", expanding=True))


@dataclass(frozen=True)
class RunSummary:
    """Counts of a finished scoring run, for its closing summary line."""

    run_id: int
    status: str
    scored: int
    flagged: int
    needs_review: int
    failed: int
    seconds: float

    def line(self) -> str:
        """Return the summary as one line."""
        return (
            f"run {self.run_id} summary: {self.scored} scored, {self.flagged} "
            f"flagged, {self.needs_review} needing review, {self.failed} failed, "
            f"{self.seconds:.0f} s ({self.status})"
        )


def summarize_run(session: Session, run_id: int) -> RunSummary:
    """Count a run's results; flags and reviews come from the latest predictions.

    Flags and reviews count the run's declarations that did not fail in it.
    """
    progress = run_progress(session, run_id)
    run = session.get(ScoringRun, run_id)
    flagged = needs_review = 0
    # A declaration that failed in this run may keep an older prediction,
    # which this run did not make, so it is not counted.
    failed = set(session.scalars(
        select(ScoringFailure.declaration_id).where(ScoringFailure.run_id == run_id)
    ))
    ids = [i for i in run_declaration_ids(session, run_id) if i not in failed]
    for start in range(0, len(ids), ID_QUERY_ROWS):
        batch = ids[start : start + ID_QUERY_ROWS]
        flags, reviews = session.execute(_REVIEW_COUNTS, {"ids": batch}).one()
        flagged, needs_review = flagged + int(flags), needs_review + int(reviews)
    ended = _aware(run.finished_at) or utc_now()
    seconds = (ended - _aware(run.created_at)).total_seconds()
    return RunSummary(
        run_id,
        progress.status,
        progress.scored,
        flagged,
        needs_review,
        progress.failed,
        max(seconds, 0.0),
    )


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite returns the stored UTC times without their zone.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def cancel_run(session: Session, run_id: int) -> ScoringRun:
    """Mark a run cancelled, so workers skip the chunks it has not finished."""
    run = session.get(ScoringRun, run_id, with_for_update=True)
    if run is None:
        raise LookupError(f"scoring run {run_id} not found; see `hscode status`")
    if run.status == RUN_DONE:
        raise ValueError(f"scoring run {run_id} is already done; nothing to cancel")
    if run.status != RUN_CANCELLED:
        run.status = RUN_CANCELLED
        run.finished_at = utc_now()
    return run
