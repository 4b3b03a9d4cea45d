"""Turning joint subheading logits into hierarchy-consistent predictions."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model.labels import LabelSpace

TOP_K = 5


@dataclass(frozen=True)
class LabelPrediction:
    """A declaration's predicted heading and subheading, with alternatives."""

    heading: str
    heading_probability: float
    subheading: str
    subheading_probability: float
    top_k: list[dict]


@dataclass(frozen=True)
class Probabilities:
    """Subheading probabilities [B, S], their heading sums [B, H], text embeddings.

    `text_embeddings` [B, D] is filled only when the caller asks for it.
    """

    subheadings: torch.Tensor
    headings: torch.Tensor
    text_embeddings: torch.Tensor | None = None

    def select(self, rows: list[int]) -> "Probabilities":
        """Return the probabilities of the given rows only, in that order."""
        embeddings = self.text_embeddings
        return Probabilities(
            self.subheadings[rows], self.headings[rows],
            None if embeddings is None else embeddings[rows],
        )


def compute_probabilities(
    logits: torch.Tensor,
    parent_index: torch.Tensor,
    num_headings: int,
    temperature: float = 1.0,
    confidence_map: Sequence[float] | None = None,
) -> Probabilities:
    """Softmax the joint logits over a temperature; sum each heading's subheadings.

    With `confidence_map` (a, b), the best heading's probability c becomes
    sigmoid(a * logit(c) + b), its subheadings scaled alike and the other
    subheadings scaled to fill the rest (see `recalibrate_best_heading`).
    """
    subheadings = torch.softmax(logits.float() / temperature, dim=-1)  # [B, S]
    index = parent_index.to(logits.device).expand_as(subheadings)
    if confidence_map is not None:
        subheadings = recalibrate_best_heading(subheadings, index, num_headings,
                                               confidence_map)
    return Probabilities(subheadings, _heading_sums(subheadings, index, num_headings))


def _heading_sums(subheadings: torch.Tensor, index: torch.Tensor, num_headings: int):
    return torch.zeros(
        subheadings.shape[0], num_headings, device=subheadings.device
    ).scatter_add_(1, index, subheadings)  # [B, H]


def recalibrate_best_heading(
    subheadings: torch.Tensor,
    index: torch.Tensor,
    num_headings: int,
    confidence_map: Sequence[float],
) -> torch.Tensor:
    """Map each row's best-heading probability through a fitted logistic curve.

    One temperature cannot fix a model that is under-confident where it is
    unsure and over-confident where it is sure. This two-parameter map of
    the best heading's probability can. The subheadings under the best
    heading are scaled by new/old, the others by (1 - new)/(1 - old), so
    the rows still sum to one and headings stay the sums of their
    subheadings.
    """
    a, b = confidence_map
    headings = _heading_sums(subheadings, index, num_headings)  # [B, H]
    old, best = headings.max(dim=-1)  # [B], [B]
    old = old.clamp(1e-6, 1 - 1e-6)
    new = torch.sigmoid(a * torch.logit(old) + b)  # [B]
    inside = index == best.unsqueeze(1)  # [B, S]
    scale = torch.where(
        inside, (new / old).unsqueeze(1), ((1 - new) / (1 - old)).unsqueeze(1)
    )
    scaled = subheadings * scale
    return scaled / scaled.sum(dim=-1, keepdim=True)


def decode_predictions(
    probabilities: Probabilities, labels: LabelSpace, k: int = TOP_K
) -> list[LabelPrediction]:
    """Pick the best heading, then the best subheading under it, per row."""
    subs, heads = probabilities.subheadings.cpu(), probabilities.headings.cpu()
    parent = labels.parent_index
    best_heading = heads.argmax(dim=-1)  # [B]

    # Subheadings outside the chosen heading cannot be chosen.
    inside = parent.unsqueeze(0) == best_heading.unsqueeze(1)  # [B, S]
    best_subheading = subs.masked_fill(~inside, -1.0).argmax(dim=-1)  # [B]
    top_probs, top_index = subs.topk(min(k, subs.shape[1]), dim=-1)  # [B, k]

    results = []
    for row in range(subs.shape[0]):
        h, s = int(best_heading[row]), int(best_subheading[row])
        top = [
            {"subheading": labels.subheadings[i], "probability": round(p, 6)}
            for p, i in zip(top_probs[row].tolist(), top_index[row].tolist())
        ]
        results.append(LabelPrediction(
            heading=labels.headings[h],
            heading_probability=float(heads[row, h]),
            subheading=labels.subheadings[s],
            subheading_probability=float(subs[row, s]),
            top_k=top,
        ))
    return results
