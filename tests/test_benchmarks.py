"""The throughput benchmark runs end to end on a tiny input."""

import json
from pathlib import Path

import pytest

from benchmarks import throughput

PHASES = {
    (variant, phase)
    for variant in ("text", "photo")
    for phase in ("model only", "end to end", "naive")
}


@pytest.fixture(scope="module")
def results(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    output = tmp_path_factory.mktemp("bench") / "results.json"
    throughput.main([
        "--text", "12", "--photos", "4", "--naive", "3", "--evidence", "30",
        "--chunk-size", "5", "--admin-url", postgres_admin_url,
        "--json", str(output),
    ])
    return json.loads(Path(output).read_text())


def phase(results: dict, variant: str, name: str) -> dict:
    return next(p for p in results["phases"]
                if (p["variant"], p["phase"]) == (variant, name))


def test_throughput_measures_every_phase(results: dict) -> None:
    assert {(p["variant"], p["phase"]) for p in results["phases"]} == PHASES


def test_throughput_end_to_end_scores_every_text_row(results: dict) -> None:
    assert phase(results, "text", "end to end")["declarations"] == 12


def test_throughput_end_to_end_scores_every_photo_row(results: dict) -> None:
    assert phase(results, "photo", "end to end")["declarations"] == 4


def test_throughput_naive_scores_subset(results: dict) -> None:
    assert phase(results, "text", "naive")["declarations"] == 3


def test_throughput_counts_model_flops(results: dict) -> None:
    assert phase(results, "text", "model only")["flops"] > 0


def test_throughput_measures_matmul_peak(results: dict) -> None:
    assert results["matmul_peak_flops"] > 0


def test_throughput_reports_chunk_latency(results: dict) -> None:
    end_to_end = phase(results, "text", "end to end")
    assert end_to_end["chunk_p95_ms"] >= end_to_end["chunk_p50_ms"] > 0


def test_throughput_reports_memory_growth(results: dict) -> None:
    assert phase(results, "text", "end to end")["rss_growth"] is not None


def test_throughput_formats_ratios(results: dict) -> None:
    assert "end to end / model only" in throughput.format_results(results)


@pytest.mark.parametrize("arguments", [
    ["--chunk-size", "0"],
    ["--naive", "-5"],
    ["--evidence", "0"],
    ["--text", "0", "--photos", "0"],
])
def test_throughput_rejects_invalid_arguments(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        throughput.main(arguments)

    assert exit_info.value.code == 2
