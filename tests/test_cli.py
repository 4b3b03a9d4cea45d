"""The `hscode` command line in embedded mode: SQLite, a local folder, in-process tasks."""

import json

import pytest
from sqlalchemy import create_engine, text

from hscode.cli import main
from tests.factories import write_manifest


@pytest.fixture
def manifest(tmp_path):
    return write_manifest(tmp_path / "manifest", per_heading=12, declared_every=4)


@pytest.fixture
def trained(embedded_env, manifest, capsys):
    """An embedded data folder with the manifest ingested and a model trained."""
    assert main(["ingest", str(manifest)]) == 0
    assert main(["train", "--epochs", "1"]) == 0
    capsys.readouterr()
    return embedded_env


def test_migrate_creates_sqlite_file(embedded_env, capsys):
    assert main(["migrate"]) == 0
    assert (embedded_env / "hscode.db").is_file()


def test_ingest_prints_counts(embedded_env, manifest, capsys):
    main(["ingest", str(manifest)])
    assert "48 inserted" in capsys.readouterr().out


def test_ingest_twice_inserts_nothing(embedded_env, manifest, capsys):
    main(["ingest", str(manifest)])
    main(["ingest", str(manifest)])
    assert "0 inserted, 0 updated, 48 unchanged" in capsys.readouterr().out


def test_ingest_unknown_map_field_exits_2(embedded_env, manifest, capsys):
    assert main(["ingest", str(manifest), "--map", "colour=name"]) == 2
    assert "unknown field 'colour'" in capsys.readouterr().err


def test_ingest_missing_file_exits_2(embedded_env, tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "absent.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_score_without_model_exits_2(embedded_env, manifest, capsys):
    main(["ingest", str(manifest)])
    assert main(["score"]) == 2
    assert "hscode train" in capsys.readouterr().err


def test_train_prints_test_accuracy(embedded_env, manifest, capsys):
    main(["ingest", str(manifest)])
    main(["train", "--epochs", "1"])
    assert "heading accuracy" in capsys.readouterr().out


def test_score_in_process_predicts_every_row(trained, capsys):
    assert main(["score"]) == 0
    assert "48 scored, 0 failed" in capsys.readouterr().out


def test_score_twice_has_nothing_left(trained, capsys):
    main(["score"])
    main(["score"])
    assert "0 declarations, 0 chunks" in capsys.readouterr().out


def test_score_fills_latest_predictions_view(trained):
    main(["score"])
    engine = create_engine(f"sqlite:///{trained / 'hscode.db'}")
    with engine.connect() as connection:
        count = connection.execute(text("SELECT COUNT(*) FROM latest_predictions"))
        assert count.scalar() == 48


def test_evaluate_json_reports_metrics(trained, manifest, capsys):
    assert main(["evaluate", str(manifest), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("count", "heading_accuracy", "subheading_accuracy",
                "heading_top3_accuracy", "subheading_top3_accuracy",
                "unknown_label_count"):
        assert key in metrics, key


def test_evaluate_counts_every_labelled_row(trained, manifest, capsys):
    main(["evaluate", str(manifest), "--json"])
    assert json.loads(capsys.readouterr().out)["count"] == 48


def test_status_shows_champion(trained, capsys):
    assert main(["status"]) == 0
    assert "(champion)" in capsys.readouterr().out
