"""Accuracy of a model's probabilities against decided codes."""

from collections.abc import Sequence

import torch

from model.labels import LabelSpace
from model.inference import autocast_for
from model.inputs import budget_batches
from model.predict import Probabilities, compute_probabilities, decode_predictions
from training.batches import ExampleTensors, batch_inputs, load_photos


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
        "chapters": _chapter_metrics(predictions, codes),
    }


def _chapter_metrics(predictions, codes: Sequence[str]) -> dict[str, dict]:
    """Heading and subheading accuracy per 2-digit chapter of the decided codes."""
    chapters: dict[str, dict] = {}
    for prediction, code in zip(predictions, codes):
        stats = chapters.setdefault(code[:2], {"count": 0, "heading": 0, "subheading": 0})
        stats["count"] += 1
        stats["heading"] += prediction.heading == code[:4]
        stats["subheading"] += prediction.subheading == code[:6]
    return {
        chapter: {
            "count": stats["count"],
            "heading_accuracy": stats["heading"] / stats["count"],
            "subheading_accuracy": stats["subheading"] / stats["count"],
        }
        for chapter, stats in sorted(chapters.items())
    }


def _top_k_hits(scores: torch.Tensor, target: torch.Tensor, k: int) -> int:
    top = scores.topk(min(k, scores.shape[1]), dim=-1).indices  # [B, k]
    return int((top == target.unsqueeze(1)).any(dim=1).sum())


def load_batch_photos(model, store, data: ExampleTensors, rows, transform, pool):
    """Return the rows' preprocessed photos, or None for a model without images."""
    if not model.config.uses_image:
        return None
    keys = [data.examples[i].image_key for i in rows]
    return load_photos(store, keys, transform, pool, model.config.image_size)


@torch.inference_mode()
def evaluate_model(model, store, data: ExampleTensors, transform, pool, device) -> dict:
    """Return accuracy metrics of the model on some examples."""
    model.eval()
    num_headings = len(model.labels.headings)
    subs = torch.empty(len(data.codes), len(model.labels.subheadings))
    heads = torch.empty(len(data.codes), num_headings)
    for rows in budget_batches(data.lengths):
        photos = load_batch_photos(model, store, data, rows, transform, pool)
        with autocast_for(device, True):
            logits = model(**batch_inputs(data, rows, photos, device))
        probabilities = compute_probabilities(logits, model.parent_index, num_headings)
        subs[rows] = probabilities.subheadings.cpu()
        heads[rows] = probabilities.headings.cpu()
    return accuracy_metrics(Probabilities(subs, heads), data.codes, model.labels)
