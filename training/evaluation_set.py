"""The frozen evaluation set: fixed when first created, never trained on."""

import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import EvaluationMember, EvaluationSet
from training.data import Example, grouped_split, normalize_description

logger = logging.getLogger(__name__)


def evaluation_set_name(chapters: Sequence[str], fraction: float, seed: int) -> str:
    """Name the frozen set of a training scope, so each scope has its own."""
    scope = ",".join(sorted(chapters)) if chapters else "all"
    return f"grouped split {fraction:g} seed {seed}, chapters {scope}"


def load_or_freeze(
    session: Session, name: str, examples: Sequence[Example], fraction: float, seed: int
) -> set[int]:
    """Return the declaration ids of the named set, creating it on first use.

    A new set is the held-out side of the grouped split of `examples`.
    """
    found = session.scalar(select(EvaluationSet).where(EvaluationSet.name == name))
    if found is not None:
        return set(session.scalars(
            select(EvaluationMember.declaration_id).where(
                EvaluationMember.set_id == found.id
            )
        ))

    _, held_out = grouped_split(examples, fraction, seed)
    frozen = EvaluationSet(name=name, size=len(held_out))
    session.add(frozen)
    session.flush()
    session.add_all(
        EvaluationMember(set_id=frozen.id, declaration_id=e.declaration_id)
        for e in held_out
    )
    logger.info("froze evaluation set %r with %d declarations", name, len(held_out))
    return {e.declaration_id for e in held_out}


def separate(
    examples: Sequence[Example], frozen_ids: set[int]
) -> tuple[list[Example], list[Example]]:
    """Split examples into (trainable, evaluation).

    A declaration outside the set whose normalised description matches one
    inside it is left out of training too, so no goods name leaks.
    """
    evaluation = [e for e in examples if e.declaration_id in frozen_ids]
    names = {normalize_description(e.description) for e in evaluation}
    trainable = [
        e for e in examples
        if e.declaration_id not in frozen_ids
        and normalize_description(e.description) not in names
    ]
    return trainable, evaluation
