"""Review decisions: a reviewer's code becomes the declaration's decided code."""

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.codes import CodeError, normalize_code
from db.models import (
    Declaration,
    DeclarationChange,
    Prediction,
    ReviewDecision,
    utc_now,
)

logger = logging.getLogger(__name__)

ACCEPT, KEEP, SET = "accept", "keep", "set"
DECISIONS = (ACCEPT, KEEP, SET)


class ReviewError(ValueError):
    """A decision that cannot be applied to its declaration."""


@dataclass(frozen=True)
class PendingReport:
    """Counts of directly inserted decisions applied, and the ones that failed."""

    applied: int
    errors: list[str]


def parse_decision(raw: object) -> str | None:
    """Return accept, keep or set; None when blank."""
    text = "" if raw is None else str(raw).strip().lower()
    if not text:
        return None
    if text not in DECISIONS:
        raise ReviewError(
            f"decision {text[:20]!r} is unknown; write accept, keep, set or "
            "leave it blank"
        )
    return text


def resolve_code(
    declaration: Declaration,
    decision: str,
    predicted_subheading: str | None,
    decided_code: object,
) -> str:
    """Return the code a decision gives the declaration, validated."""
    if decision == ACCEPT:
        if not predicted_subheading:
            raise ReviewError(
                f"declaration {declaration.id} has no predicted subheading to "
                "accept; score it first or use set"
            )
        code = _normalize(predicted_subheading, "predicted subheading")
        # The subheading is stored with its 6 digits, not padded to 10.
        return code[:6]
    if decision == KEEP:
        if declaration.declared_hs_code is None:
            raise ReviewError(
                f"declaration {declaration.id} has no declared code to keep; "
                "use set with a decided_code"
            )
        return declaration.declared_hs_code
    code = _normalize(decided_code, "decided_code")
    if code is None:
        raise ReviewError("decision set needs a decided_code of 6 to 10 digits")
    return code


def _normalize(raw: object, field: str) -> str | None:
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    try:
        return normalize_code(raw)
    except CodeError as error:
        raise ReviewError(f"{field}: {error}") from None


def apply_decision(
    session: Session,
    declaration: Declaration,
    decision: str,
    code: str,
    reviewer: str,
    source_file: str | None,
) -> ReviewDecision:
    """Set the declaration's decided code and record who decided it."""
    previous = declaration.hs_code
    declaration.hs_code = code
    if previous != code:
        session.add(
            DeclarationChange(
                declaration_id=declaration.id,
                field="hs_code",
                old_value=previous,
                new_value=code,
                origin=f"review by {reviewer}"[:300],
            )
        )
    row = ReviewDecision(
        declaration_id=declaration.id,
        decision=decision,
        previous_hs_code=previous,
        decided_hs_code=code,
        reviewer=reviewer,
        source_file=source_file,
        decided_at=utc_now(),
        applied_at=utc_now(),
    )
    session.add(row)
    return row


def is_recorded(session: Session, declaration_id: int, decision: str, code: str) -> bool:
    """Return whether the declaration's newest applied decision is this one."""
    newest = session.execute(
        select(ReviewDecision.decision, ReviewDecision.decided_hs_code)
        .where(
            ReviewDecision.declaration_id == declaration_id,
            ReviewDecision.applied_at.is_not(None),
        )
        .order_by(ReviewDecision.id.desc())
        .limit(1)
    ).first()
    return newest is not None and tuple(newest) == (decision, code)


def latest_subheading(session: Session, declaration_id: int) -> str | None:
    """Return the subheading of a declaration's newest prediction."""
    return session.scalar(
        select(Prediction.subheading)
        .where(Prediction.declaration_id == declaration_id)
        .order_by(Prediction.created_at.desc(), Prediction.model_version_id.desc())
        .limit(1)
    )


def apply_pending(session: Session) -> PendingReport:
    """Apply the decisions inserted directly into `review_decisions`.

    A pending row has neither `applied_at` nor `error`. `accept` takes the
    newest prediction's subheading, `keep` the declared code, `set` the row's
    `decided_hs_code`. A row that cannot be applied gets its `error` and
    stays unapplied; clear `error` after fixing it to try again.
    """
    pending = session.scalars(
        select(ReviewDecision)
        .where(ReviewDecision.applied_at.is_(None), ReviewDecision.error.is_(None))
        .order_by(ReviewDecision.id)
        .with_for_update()
    ).all()
    applied, errors = 0, []
    for row in pending:
        try:
            _apply_row(session, row)
            applied += 1
        except ReviewError as error:
            row.error = str(error)
            errors.append(f"review_decisions id {row.id}: {error}")
    return PendingReport(applied, errors)


def _apply_row(session: Session, row: ReviewDecision) -> None:
    declaration = session.get(Declaration, row.declaration_id)
    if declaration is None:
        # SQLite does not enforce the foreign key on direct inserts.
        raise ReviewError(
            f"declaration {row.declaration_id} not found; it may have been purged"
        )
    decision = parse_decision(row.decision)
    if decision is None:
        raise ReviewError("decision is blank; write accept, keep or set")
    code = resolve_code(
        declaration,
        decision,
        latest_subheading(session, declaration.id),
        row.decided_hs_code,
    )
    row.decision = decision
    row.previous_hs_code = declaration.hs_code
    row.decided_hs_code = code
    row.applied_at = utc_now()
    if declaration.hs_code != code:
        session.add(
            DeclarationChange(
                declaration_id=declaration.id,
                field="hs_code",
                old_value=declaration.hs_code,
                new_value=code,
                origin=f"review by {row.reviewer}"[:300],
            )
        )
    declaration.hs_code = code
