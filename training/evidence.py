"""Evidence at training time: embed the decided cases, measure the hit rate."""

import logging
from collections.abc import Sequence

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Declaration
from model.evidence import EvidenceCase, EvidenceIndex, normalize, subheading_hit_rate
from model.fusion import HSClassifier
from model.inference import autocast_for
from model.inputs import budget_batches
from training.batches import ExampleTensors, batch_inputs
from training.data import normalize_description

logger = logging.getLogger(__name__)

REFERENCE_QUERY_ROWS = 5000
"""Declaration ids per reference query, below every database's parameter limit."""


@torch.inference_mode()
def embed_examples(
    model: HSClassifier, data: ExampleTensors, device: torch.device
) -> torch.Tensor:
    """Return the normalised text embeddings [N, D] of examples, on the CPU."""
    model.eval()
    embeddings = torch.empty(len(data.examples), model.evidence_dim)
    for rows in budget_batches(data.lengths):
        with autocast_for(device, True):
            embedded = model.embed_text(**batch_inputs(data, rows, None, device))  # [b, E]
        embeddings[rows] = embedded.float().cpu()
    return normalize(embeddings)


def build_evidence_index(
    sessions: sessionmaker[Session],
    model: HSClassifier,
    parts: Sequence[ExampleTensors],
    device: torch.device,
) -> EvidenceIndex:
    """Embed the labelled training declarations into an evidence index."""
    examples = [e for part in parts for e in part.examples]
    embeddings = torch.cat([embed_examples(model, part, device) for part in parts])
    references = _references(sessions, [e.declaration_id for e in examples])
    cases = [
        EvidenceCase(
            e.declaration_id,
            references.get(e.declaration_id, ""),
            e.description,
            e.hs_code,
        )
        for e in examples
    ]
    logger.info("evidence index: %d decided cases, %d dims", *embeddings.shape)
    return EvidenceIndex(embeddings, cases)


def _references(sessions: sessionmaker[Session], ids: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    with sessions() as session:
        for start in range(0, len(ids), REFERENCE_QUERY_ROWS):
            batch = ids[start : start + REFERENCE_QUERY_ROWS]
            rows = session.execute(
                select(Declaration.id, Declaration.reference).where(
                    Declaration.id.in_(batch)
                )
            )
            found.update({declaration_id: ref for declaration_id, ref in rows})
    return found


def evidence_hit_rate(
    index: EvidenceIndex,
    model: HSClassifier,
    data: ExampleTensors,
    device: torch.device,
) -> float:
    """Share of examples whose three nearest decided cases include their subheading."""
    queries = embed_examples(model, data, device)
    matches = index.nearest(queries, [e.declaration_id for e in data.examples])
    return subheading_hit_rate(matches, data.codes)


def manifest_hit_rate(
    index: EvidenceIndex,
    text_embeddings: torch.Tensor,
    texts: Sequence[str],
    codes: Sequence[str],
) -> float:
    """Evidence hit rate of labelled rows that are not declarations of the index.

    Cases with the row's normalised description are left out, as the grouped
    split leaves them out of training, so a row never finds itself.
    """
    by_description: dict[str, list[int]] = {}
    for case in index.cases:
        key = normalize_description(case.description)
        by_description.setdefault(key, []).append(case.declaration_id)
    excluded = [by_description.get(normalize_description(t), []) for t in texts]
    return subheading_hit_rate(index.nearest(text_embeddings, excluded), codes)
