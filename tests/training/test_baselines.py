"""The TF-IDF and zero-shot baselines' ranking metrics."""

import pytest
import torch

from tests.factories import read_cases
from training.baselines import ranking_metrics, tfidf_baseline
from training.data import Example, grouped_split

CANDIDATES = ["847130", "847141", "851712"]


def test_ranking_metrics_counts_top_1_subheadings():
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0]])
    metrics = ranking_metrics(scores, CANDIDATES, ["8471300000", "8517120000"])
    assert metrics["subheading_accuracy"] == 0.5


def test_ranking_metrics_heading_best_subheading():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    metrics = ranking_metrics(scores, CANDIDATES, ["8471300000"])
    assert metrics["heading_accuracy"] == 0.0


def test_ranking_metrics_counts_top_3_subheadings():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    metrics = ranking_metrics(scores, CANDIDATES, ["8471300000"])
    assert metrics["subheading_top3_accuracy"] == 1.0


def test_ranking_metrics_of_no_rows_raises():
    with pytest.raises(ValueError, match="zero"):
        ranking_metrics(torch.zeros(0, 3), CANDIDATES, [])


def test_tfidf_baseline_beats_chance_on_shipped_cases():
    cases = read_cases(per_heading=15)
    examples = [Example(i, c["name"], None, c["hscode"]) for i, c in enumerate(cases)]
    train, test = grouped_split(examples, 0.3, seed=0)
    headings = {e.hs_code[:4] for e in examples}
    metrics = tfidf_baseline(train, test)
    assert metrics["heading_accuracy"] > 1 / len(headings)
