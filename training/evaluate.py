"""Accuracy of a model's probabilities against decided codes."""

from collections.abc import Sequence

import torch

from model.inference import autocast_for
from model.inputs import budget_batches
from model.labels import LabelSpace
from model.predict import Probabilities, compute_probabilities, decode_predictions
from training.batches import ExampleTensors, batch_inputs, load_photos
from training.calibration import auto_accept, coverage_curve, expected_calibration_error


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
def collect_logits(model, store, data: ExampleTensors, transform, pool, device):
    """Return the model's joint subheading logits [N, S] for every example, in order."""
    model.eval()
    logits = torch.empty(len(data.codes), len(model.labels.subheadings))
    for rows in budget_batches(data.lengths):
        photos = load_batch_photos(model, store, data, rows, transform, pool)
        with autocast_for(device, True):
            logits[rows] = model(**batch_inputs(data, rows, photos, device)).float().cpu()
    return logits


def probabilities_of(model, logits: torch.Tensor, calibrated: bool = True) -> Probabilities:
    """Turn collected logits into probabilities, calibrated as the model is by default."""
    config = model.config
    return compute_probabilities(
        logits, model.parent_index.cpu(), len(model.labels.headings),
        config.temperature if calibrated else 1.0,
        config.confidence_map if calibrated else None,
    )


def evaluate_model(model, store, data: ExampleTensors, transform, pool, device) -> dict:
    """Return accuracy and calibration metrics of the model on some examples."""
    logits = collect_logits(model, store, data, transform, pool, device)
    return metrics_from_logits(model, logits, data.codes)


def metrics_from_logits(model, logits: torch.Tensor, codes: Sequence[str]) -> dict:
    """Accuracy and calibration metrics of collected logits against decided codes."""
    probabilities = probabilities_of(model, logits)
    metrics = accuracy_metrics(probabilities, codes, model.labels)
    return {**metrics, **calibration_metrics(probabilities, codes, model.labels)}


def heading_confidence(
    probabilities: Probabilities, codes: Sequence[str], labels: LabelSpace
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return each row's best heading probability and whether that heading is right."""
    confidence, best = probabilities.headings.max(dim=-1)  # [N], [N]
    correct = torch.tensor(
        [labels.headings[int(b)] == c[:4] for b, c in zip(best, codes)]
    )
    return confidence, correct


def calibration_metrics(
    probabilities: Probabilities, codes: Sequence[str], labels: LabelSpace
) -> dict[str, float | None]:
    """Heading ECE and the share auto-accepted at the target heading precision."""
    confidence, correct = heading_confidence(probabilities, codes, labels)
    share, threshold = auto_accept(coverage_curve(confidence, correct))
    return {
        "heading_ece": expected_calibration_error(confidence, correct),
        "auto_accept_share": share,
        "auto_accept_threshold": threshold,
    }
