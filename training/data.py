"""Labelled declarations, the grouped split and the training-data fingerprint."""

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Declaration

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Example:
    """A labelled declaration."""

    declaration_id: int
    description: str
    image_key: str | None
    hs_code: str


def load_examples(session: Session, chapters: Sequence[str] | None = None) -> list[Example]:
    """Load every declaration with a decided code, optionally of some chapters only."""
    query = select(
        Declaration.id,
        Declaration.description,
        Declaration.image_key,
        Declaration.hs_code,
    ).where(Declaration.hs_code.is_not(None)).order_by(Declaration.id)
    rows = session.execute(query)
    examples = [Example(*row) for row in rows]
    if chapters:
        wanted = set(chapters)
        examples = [e for e in examples if e.hs_code[:2] in wanted]
    return examples


def normalize_description(text: str) -> str:
    """Lower-case, collapse whitespace runs to one space, strip."""
    return _WHITESPACE.sub(" ", text.lower()).strip()


def grouped_split(
    examples: Sequence[Example], fraction: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Split so that one normalised description never lies on both sides.

    The distinct normalised descriptions are sorted, shuffled with
    `random.Random(seed)`, and the rows of the first `fraction` of them form
    the held-out side. Returns (kept, held_out).
    """
    groups = sorted({normalize_description(e.description) for e in examples})
    random.Random(seed).shuffle(groups)
    held = set(groups[: int(len(groups) * fraction)])

    kept, held_out = [], []
    for example in examples:
        side = held_out if normalize_description(example.description) in held else kept
        side.append(example)
    return kept, held_out


def fingerprint(examples: Sequence[Example]) -> str:
    """Return a SHA-256 over the ids, codes, descriptions and photos of examples."""
    digest = hashlib.sha256()
    for e in sorted(examples, key=lambda e: e.declaration_id):
        digest.update(f"{e.declaration_id}\t{e.hs_code}\t{e.image_key}\t".encode())
        digest.update(e.description.encode())
        digest.update(b"\n")
    return digest.hexdigest()
