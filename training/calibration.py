"""Calibration: a fitted softmax temperature, its error, and the auto-accept coverage."""

from itertools import pairwise

import torch

from model.fusion import heading_log_probs

ECE_BINS = 15
TARGET_PRECISION = 0.97
"""Heading precision that auto-accepted predictions must reach."""
TEMPERATURES = torch.linspace(0.25, 4.0, 301)
"""Candidate temperatures: a grid is enough for one parameter and cannot diverge."""
CONFIDENCE_SLOPES = torch.linspace(0.2, 2.0, 91)
CONFIDENCE_OFFSETS = torch.linspace(-2.0, 2.0, 81)


def fit_temperature(
    logits: torch.Tensor,
    subheading_target: torch.Tensor,
    heading_target: torch.Tensor,
    parent_index: torch.Tensor,
) -> float:
    """Return the temperature that minimises the heading and subheading NLL.

    `logits` [N, S] are the model's joint logits on held-out rows; targets
    of -1 (a code the model never saw) are left out. Label smoothing in
    training leaves a model under-confident, and one temperature over all
    logits corrects that without changing any prediction's rank.
    """
    known = subheading_target >= 0
    if not bool(known.any()):
        return 1.0
    logits = logits[known].float()
    subheading_target, heading_target = subheading_target[known], heading_target[known]
    num_headings = int(parent_index.max()) + 1

    best, best_loss = 1.0, float("inf")
    for temperature in TEMPERATURES.tolist():
        log_probs = torch.log_softmax(logits / temperature, dim=-1)  # [N, S]
        headings = heading_log_probs(log_probs, parent_index, num_headings)  # [N, H]
        loss = -(
            log_probs.gather(1, subheading_target.unsqueeze(1)).mean()
            + headings.gather(1, heading_target.unsqueeze(1)).mean()
        )
        if float(loss) < best_loss:
            best, best_loss = temperature, float(loss)
    return best


def fit_confidence_map(confidence: torch.Tensor, correct: torch.Tensor) -> list[float]:
    """Fit (a, b) of sigmoid(a * logit(c) + b) to whether the best heading was right.

    Logistic regression on one feature (Platt scaling of the best heading's
    probability), by a grid over a in [0.2, 2] and b in [-2, 2]; both ends
    keep a few hundred validation rows from fitting noise. Returns [1, 0],
    the identity, for fewer than two rows or rows all right or all wrong.
    """
    if len(confidence) < 2 or bool(correct.all()) or not bool(correct.any()):
        return [1.0, 0.0]
    x = torch.logit(confidence.double().clamp(1e-6, 1 - 1e-6))  # [N]
    y = correct.double()
    a = CONFIDENCE_SLOPES.double().view(-1, 1, 1)  # [A, 1, 1]
    b = CONFIDENCE_OFFSETS.double().view(1, -1, 1)  # [1, B, 1]
    z = a * x + b  # [A, B, N]
    # Binary cross-entropy from logits: softplus(z) - y * z.
    loss = (torch.nn.functional.softplus(z) - y * z).mean(dim=-1)  # [A, B]
    best = int(loss.argmin())
    return [
        float(CONFIDENCE_SLOPES[best // len(CONFIDENCE_OFFSETS)]),
        float(CONFIDENCE_OFFSETS[best % len(CONFIDENCE_OFFSETS)]),
    ]


def reliability_bins(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS
) -> list[dict]:
    """Mean confidence and accuracy of the rows in each equal-width confidence bin."""
    edges = torch.linspace(0, 1, bins + 1).tolist()
    result = []
    for index, (lower, upper) in enumerate(pairwise(edges)):
        inside = (confidence > lower) & (confidence <= upper)
        if index == 0:
            inside |= confidence == 0
        count = int(inside.sum())
        result.append({
            "lower": lower,
            "upper": upper,
            "count": count,
            "confidence": float(confidence[inside].mean()) if count else None,
            "accuracy": float(correct[inside].float().mean()) if count else None,
        })
    return result


def expected_calibration_error(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """Return the count-weighted mean gap between confidence and accuracy over the bins."""
    total = len(confidence)
    if total == 0:
        raise ValueError("cannot compute a calibration error on zero rows")
    return sum(
        b["count"] / total * abs(b["confidence"] - b["accuracy"])
        for b in reliability_bins(confidence, correct, bins)
        if b["count"]
    )


def coverage_curve(confidence: torch.Tensor, correct: torch.Tensor) -> list[dict]:
    """Precision of the rows at or above each confidence, most confident first.

    One point per distinct confidence: accepting every prediction whose
    confidence is at least `threshold` covers `coverage` of the rows, of
    which `precision` are right.
    """
    order = confidence.argsort(descending=True)
    sorted_confidence = confidence[order]
    hits = correct[order].float().cumsum(0)
    points = []
    for end in range(1, len(order) + 1):
        last = end == len(order)
        if not last and sorted_confidence[end] == sorted_confidence[end - 1]:
            continue
        points.append({
            "threshold": float(sorted_confidence[end - 1]),
            "coverage": end / len(order),
            "precision": float(hits[end - 1]) / end,
        })
    return points


def auto_accept(
    points: list[dict], precision: float = TARGET_PRECISION
) -> tuple[float | None, float | None]:
    """Return the largest coverage whose precision reaches `precision`, and its threshold.

    (None, None) when no threshold reaches it.
    """
    reaching = [p for p in points if p["precision"] >= precision]
    if not reaching:
        return None, None
    best = max(reaching, key=lambda p: p["coverage"])
    return best["coverage"], best["threshold"]
