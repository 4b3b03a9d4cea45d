"""Accuracy of a model's probabilities against decided codes."""

from collections.abc import Sequence

import torch

from model.labels import LabelSpace
from model.predict import Probabilities, decode_predictions


def label_indices(
    codes: Sequence[str], labels: LabelSpace
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return heading and subheading indices per code, -1 where never seen."""
    headings = [labels.heading_index(c) for c in codes]
    subheadings = [labels.subheading_index(c) for c in codes]
    return (
        torch.tensor([-1 if i is None else i for i in headings]),
        torch.tensor([-1 if i is None else i for i in subheadings]),
    )


def accuracy_metrics(
    probabilities: Probabilities, codes: Sequence[str], labels: LabelSpace
) -> dict[str, float | int]:
    """Top-1 and top-3 heading and subheading accuracy; unknown labels are misses.

    Top-1 uses the hierarchy-consistent prediction: the best heading, then
    the best subheading under it.
    """
    count = len(codes)
    if count == 0:
        raise ValueError("cannot evaluate on zero labelled declarations")
    heading_target, subheading_target = label_indices(codes, labels)
    predictions = decode_predictions(probabilities, labels, k=1)

    heading_hits = sum(p.heading == c[:4] for p, c in zip(predictions, codes))
    subheading_hits = sum(p.subheading == c[:6] for p, c in zip(predictions, codes))
    return {
        "count": count,
        "heading_accuracy": heading_hits / count,
        "subheading_accuracy": subheading_hits / count,
        "heading_top3_accuracy": _top_k_hits(probabilities.headings, heading_target, 3)
        / count,
        "subheading_top3_accuracy": _top_k_hits(
            probabilities.subheadings, subheading_target, 3
        )
        / count,
        "unknown_label_count": int((subheading_target < 0).sum()),
    }


def _top_k_hits(scores: torch.Tensor, target: torch.Tensor, k: int) -> int:
    top = scores.topk(min(k, scores.shape[1]), dim=-1).indices  # [B, k]
    return int((top == target.unsqueeze(1)).any(dim=1).sum())
