"""Evidence: nearest decided cases by text embedding, saved with the checkpoint."""

import json

import torch
from sqlalchemy import create_engine, text

from model.evidence import EvidenceCase, EvidenceIndex, subheading_hit_rate

CASES = [
    EvidenceCase(1, "R1", "laptop", "8471300000"),
    EvidenceCase(2, "R2", "phone", "8517130000"),
    EvidenceCase(3, "R3", "monitor", "8528520000"),
    EvidenceCase(4, "R4", "notebook", "8471300000"),
]
EMBEDDINGS = torch.tensor(
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.9, 0.1, 0.0]]
)


def query_rows(data_dir, sql: str) -> list:
    engine = create_engine(f"sqlite:///{data_dir / 'hscode.db'}")
    with engine.connect() as connection:
        rows = connection.execute(text(sql)).all()
    engine.dispose()
    return rows


def test_nearest_ranks_by_cosine() -> None:
    index = EvidenceIndex(EMBEDDINGS, CASES)

    found = index.nearest(torch.tensor([[2.0, 0.1, 0.0]]), k=2, distinct=False)

    assert [case.declaration_id for case, _ in found[0]] == [1, 4]


def test_nearest_distinct_skips_repeated_subheading() -> None:
    index = EvidenceIndex(EMBEDDINGS, CASES)

    found = index.nearest(torch.tensor([[2.0, 0.1, 0.0]]), k=2)

    assert [case.declaration_id for case, _ in found[0]] == [1, 2]


def test_nearest_distinct_fills_with_repeats() -> None:
    index = EvidenceIndex(EMBEDDINGS[[0, 3]], [CASES[0], CASES[3]])

    found = index.nearest(torch.tensor([[2.0, 0.1, 0.0]]), k=2)

    assert [case.declaration_id for case, _ in found[0]] == [1, 4]


def test_nearest_excludes_own_declaration() -> None:
    index = EvidenceIndex(EMBEDDINGS, CASES)

    found = index.nearest(torch.tensor([[1.0, 0.0, 0.0]]), [1])

    assert 1 not in [case.declaration_id for case, _ in found[0]]


def test_nearest_returns_three_cases() -> None:
    index = EvidenceIndex(EMBEDDINGS, CASES)

    found = index.nearest(torch.tensor([[0.0, 1.0, 0.0]]), [2])

    assert len(found[0]) == 3


def test_index_save_load_keeps_cases(tmp_path) -> None:
    EvidenceIndex(EMBEDDINGS, CASES).save(tmp_path)

    loaded = EvidenceIndex.load(tmp_path)

    assert loaded.cases == CASES


def test_index_load_without_files_is_none(tmp_path) -> None:
    assert EvidenceIndex.load(tmp_path) is None


def test_hit_rate_counts_subheading_matches() -> None:
    index = EvidenceIndex(EMBEDDINGS, CASES)
    found = index.nearest(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), k=1)

    assert subheading_hit_rate(found, ["8471309000", "8517130000"]) == 0.5


def test_train_records_evidence_hit_rate(scored_env) -> None:
    rows = query_rows(scored_env, "SELECT metrics FROM model_versions")

    assert "evidence_subheading_hit_rate" in json.loads(rows[0].metrics)["test"]


def test_prediction_evidence_has_three_cases(scored_env) -> None:
    rows = query_rows(scored_env, "SELECT evidence FROM latest_predictions")

    assert all(len(json.loads(row.evidence)["cases"]) == 3 for row in rows)


def test_prediction_evidence_never_own_declaration(scored_env) -> None:
    rows = query_rows(
        scored_env, "SELECT declaration_id, evidence FROM latest_predictions"
    )

    own = [
        row.declaration_id
        for row in rows
        for case in json.loads(row.evidence)["cases"]
        if case["declaration_id"] == row.declaration_id
    ]
    assert own == []


def test_prediction_evidence_names_subheading(scored_env) -> None:
    row = query_rows(
        scored_env, "SELECT subheading, evidence FROM latest_predictions LIMIT 1"
    )[0]

    named = json.loads(row.evidence)["subheading"]
    assert named["code"] == row.subheading
    assert named["name_ko"]


def test_evaluate_reports_evidence_hit_rate(scored_env, tmp_path, capsys) -> None:
    from hscode.cli import main
    from tests.factories import write_manifest

    manifest = write_manifest(tmp_path / "eval", per_heading=3)
    main(["evaluate", str(manifest), "--json"])

    assert "evidence_subheading_hit_rate" in json.loads(capsys.readouterr().out)
