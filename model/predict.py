"""Turning joint subheading logits into hierarchy-consistent predictions."""

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
    logits: torch.Tensor, parent_index: torch.Tensor, num_headings: int
) -> Probabilities:
    """Softmax the joint logits and sum each heading's subheadings."""
    subheadings = torch.softmax(logits.float(), dim=-1)  # [B, S]
    index = parent_index.to(logits.device).expand_as(subheadings)
    headings = torch.zeros(
        subheadings.shape[0], num_headings, device=logits.device
    ).scatter_add_(1, index, subheadings)  # [B, H]
    return Probabilities(subheadings, headings)


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
