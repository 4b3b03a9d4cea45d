"""Promotion by evaluation: a candidate replaces the champion only when better."""

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ModelVersion, PromotionDecision
from db.registry import get_champion, promote

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionPolicy:
    """When a candidate may replace the champion."""

    margin: float = 0.005
    """Minimum rise of heading accuracy on the frozen set (0.005 = 0.5 points)."""
    chapter_tolerance: float = 0.02
    """Largest heading-accuracy loss allowed in any chapter with enough rows."""
    min_chapter_rows: int = 50
    """Chapters with fewer evaluation rows are too noisy to veto a promotion."""


def compare(
    candidate: dict, champion: dict, policy: PromotionPolicy
) -> tuple[bool, str]:
    """Decide from both models' metrics on the same set; return (promote, reason)."""
    gain = candidate["heading_accuracy"] - champion["heading_accuracy"]
    if gain < policy.margin:
        return False, (
            f"heading accuracy {candidate['heading_accuracy']:.4f} vs champion "
            f"{champion['heading_accuracy']:.4f}: gain {gain * 100:+.2f} points is "
            f"below the margin of {policy.margin * 100:.2f}"
        )

    for chapter, stats in sorted(champion.get("chapters", {}).items()):
        if stats["count"] < policy.min_chapter_rows:
            continue
        ours = candidate.get("chapters", {}).get(chapter, {"heading_accuracy": 0.0})
        loss = stats["heading_accuracy"] - ours["heading_accuracy"]
        if loss > policy.chapter_tolerance:
            return False, (
                f"chapter {chapter} heading accuracy falls by {loss * 100:.2f} "
                f"points ({stats['heading_accuracy']:.4f} to "
                f"{ours['heading_accuracy']:.4f}), more than the tolerance of "
                f"{policy.chapter_tolerance * 100:.2f}"
            )
    return True, (
        f"heading accuracy {candidate['heading_accuracy']:.4f} vs champion "
        f"{champion['heading_accuracy']:.4f}: gain {gain * 100:+.2f} points, "
        "no chapter beyond tolerance"
    )


def decide(
    session: Session,
    candidate: ModelVersion,
    candidate_metrics: dict,
    champion_metrics: dict | None,
    policy: PromotionPolicy,
    actor: str,
    mismatch: str | None = None,
    evaluated_champion_id: int | None = None,
) -> PromotionDecision:
    """Promote or reject a candidate, and record the decision with both metric sets.

    `mismatch` rejects the candidate with that reason, for models that
    cannot be compared on one evaluation set. `champion_metrics` are those
    of version `evaluated_champion_id`; when another version is champion by
    now, the candidate is rejected rather than compared with the wrong model.
    """
    champion = get_champion(session)
    if champion is None:
        promoted, action = True, "first"
        reason = "no champion yet: the first model becomes champion"
    elif mismatch is not None:
        promoted, action, reason = False, "reject", mismatch
    elif champion_metrics is None or champion.id != evaluated_champion_id:
        promoted, action = False, "reject"
        reason = (
            f"version {champion.id} became champion while this candidate was "
            "evaluated, so they were not compared; `hscode promote "
            f"{candidate.id}` promotes the candidate by hand"
        )
    else:
        promoted, reason = compare(candidate_metrics, champion_metrics, policy)
        action = "promote" if promoted else "reject"

    decision = PromotionDecision(
        action=action,
        candidate_id=candidate.id,
        previous_champion_id=champion.id if champion else None,
        champion_id=candidate.id if promoted else champion.id,
        reason=reason,
        candidate_metrics=_summary(candidate_metrics),
        champion_metrics=_summary(champion_metrics),
        actor=actor,
    )
    session.add(decision)
    # A rejected candidate stays a candidate that a person may still promote.
    if promoted:
        promote(session, candidate)
    logger.info("model version %d %s: %s", candidate.id,
                "promoted" if promoted else "rejected", reason)
    return decision


def promote_version(session: Session, version_id: int, actor: str) -> PromotionDecision:
    """Make a version champion by hand, whatever its metrics; record who did it."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise LookupError(f"model version {version_id} not found")
    champion = get_champion(session)
    if champion is not None and champion.id == version.id:
        raise ValueError(f"model version {version_id} is already the champion")

    decision = PromotionDecision(
        action="manual-promote", candidate_id=version.id,
        previous_champion_id=champion.id if champion else None,
        champion_id=version.id, reason=f"promoted by {actor}",
        candidate_metrics=None, champion_metrics=None, actor=actor,
    )
    session.add(decision)
    promote(session, version)
    logger.info("model version %d promoted by %s", version.id, actor)
    return decision


def rollback(session: Session, actor: str) -> PromotionDecision:
    """Restore the champion that the current one replaced; record who did it."""
    champion = get_champion(session)
    if champion is None:
        raise LookupError("no champion to roll back")
    previous_id = session.scalar(
        select(PromotionDecision.previous_champion_id)
        .where(
            PromotionDecision.champion_id == champion.id,
            PromotionDecision.previous_champion_id.is_not(None),
            PromotionDecision.action != "reject",
        )
        .order_by(PromotionDecision.id.desc())
        .limit(1)
    )
    if previous_id is None:
        raise LookupError(
            f"model version {champion.id} replaced no earlier champion; nothing to "
            "roll back to"
        )

    previous = session.get(ModelVersion, previous_id)
    decision = PromotionDecision(
        action="rollback", candidate_id=previous.id,
        previous_champion_id=champion.id, champion_id=previous.id,
        reason=f"rolled back by {actor} from version {champion.id}",
        candidate_metrics=None, champion_metrics=None, actor=actor,
    )
    session.add(decision)
    promote(session, previous)
    logger.info("rolled back from model version %d to %d by %s",
                champion.id, previous.id, actor)
    return decision


def _summary(metrics: dict | None) -> dict | None:
    return None if metrics is None else dict(metrics)
