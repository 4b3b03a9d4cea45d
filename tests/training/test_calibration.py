"""Temperature fitting, calibration error and auto-accept coverage."""

import pytest
import torch

from training.calibration import (
    auto_accept,
    coverage_curve,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)

PARENT = torch.tensor([0, 0, 1, 1])
"""Four subheadings under two headings."""


def _overconfident_logits(rows: int = 400):
    """Logits scaled by 4 whose true distribution is the softmax of the unscaled ones."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(rows, 4, generator=generator)
    targets = torch.multinomial(torch.softmax(base, -1), 1, generator=generator)[:, 0]
    return base * 4, targets, PARENT[targets]


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    logits, subheadings, headings = _overconfident_logits()
    assert fit_temperature(logits, subheadings, headings, PARENT) == pytest.approx(4, rel=0.3)


def test_fit_temperature_without_known_targets_is_one():
    targets = torch.tensor([-1, -1])
    assert fit_temperature(torch.zeros(2, 4), targets, targets, PARENT) == 1.0


def test_fit_temperature_lowers_the_calibration_error():
    logits, subheadings, headings = _overconfident_logits()
    temperature = fit_temperature(logits, subheadings, headings, PARENT)

    def error(scale: float) -> float:
        probabilities = torch.softmax(logits / scale, -1)
        confidence, best = probabilities.max(-1)
        return expected_calibration_error(confidence, best == subheadings)

    assert error(temperature) < error(1.0)


def test_calibration_error_perfect_forecast_zero():
    confidence = torch.tensor([1.0, 1.0, 0.5, 0.5])
    correct = torch.tensor([True, True, True, False])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0)


def test_expected_calibration_error_weighs_the_gap_by_count():
    confidence = torch.tensor([0.9, 0.9, 0.9, 0.9])
    correct = torch.tensor([True, False, False, False])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.65)


def test_expected_calibration_error_of_no_rows_raises():
    with pytest.raises(ValueError, match="zero rows"):
        expected_calibration_error(torch.tensor([]), torch.tensor([], dtype=torch.bool))


def test_reliability_bins_has_fifteen_bins_by_default():
    bins = reliability_bins(torch.tensor([0.5]), torch.tensor([True]))
    assert len(bins) == 15


def test_reliability_bins_leaves_empty_bins_unmeasured():
    bins = reliability_bins(torch.tensor([0.99]), torch.tensor([True]))
    assert bins[0]["accuracy"] is None


def test_reliability_bins_zero_confidence_first():
    bins = reliability_bins(torch.tensor([0.0]), torch.tensor([False]))
    assert bins[0]["count"] == 1


def test_coverage_curve_ends_at_full_coverage():
    points = coverage_curve(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, True, False]))
    assert points[-1]["coverage"] == 1.0


def test_coverage_curve_merges_equal_confidences():
    points = coverage_curve(torch.tensor([0.9, 0.9, 0.7]), torch.tensor([True, False, True]))
    assert [p["coverage"] for p in points] == pytest.approx([2 / 3, 1.0])


def test_auto_accept_largest_coverage():
    points = coverage_curve(
        torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, True, False, False])
    )
    assert auto_accept(points, 0.97) == (0.5, pytest.approx(0.8))


def test_auto_accept_without_a_reaching_threshold_is_none():
    points = coverage_curve(torch.tensor([0.9]), torch.tensor([False]))
    assert auto_accept(points, 0.97) == (None, None)
