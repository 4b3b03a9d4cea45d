"""`hscode report` against PostgreSQL and S3: the study's models, baselines, targets."""

import json

import pytest

from db.ingest import ingest_manifest
from hscode.cli import main
from hscode.context import open_context
from tests.factories import write_manifest
from tests.services import create_database, drop_database
from training.refresh import refresh
from training.report import ReportError, build_report
from training.settings import load_train_settings
from training.train import train


@pytest.fixture(scope="module")
def env(module_services_env):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in module_services_env.items():
            patch.setenv(name, value)
        yield module_services_env


@pytest.fixture(scope="module")
def registry(env, tmp_path_factory):
    """A champion with n-grams, and the study's text and concat models beside it."""
    ctx = open_context()
    manifest = write_manifest(tmp_path_factory.mktemp("report"), per_heading=15)
    ingest_manifest(ctx.sessions, ctx.store, manifest)
    champion = refresh(ctx.sessions, ctx.store, load_train_settings(epochs=2)).version
    for fusion in ("text", "concat"):
        train(ctx.sessions, ctx.store, load_train_settings(
            fusion=fusion, epochs=1, ngram_buckets=0, nomenclature_names=False))
    return {"ctx": ctx, "champion": champion}


@pytest.fixture(scope="module")
def report(registry):
    ctx = registry["ctx"]
    return build_report(ctx.sessions, ctx.store, "cpu")


def _model(report, name):
    return next(m for m in report["models"] if m["name"] == name)


def test_build_report_without_champion_raises(services_env, postgres_admin_url,
                                              tmp_path, monkeypatch):
    url = create_database(postgres_admin_url)
    try:
        for name, value in {**services_env, "HSCODE_DATABASE_URL": url,
                            "HSCODE_DATA_DIR": str(tmp_path)}.items():
            monkeypatch.setenv(name, value)
        ctx = open_context()
        with pytest.raises(ReportError, match="no champion"):
            build_report(ctx.sessions, ctx.store, "cpu")
    finally:
        drop_database(url)


def test_report_lists_the_four_study_models(report):
    study = [m["name"] for m in report["models"] if m["group"] == "study"]
    assert study == ["text", "image", "concat", "weighted"]


def test_report_measures_a_trained_study_model(report):
    assert _model(report, "text")["heading_top1"] is not None


def test_report_missing_study_model_hint(report):
    assert "--model image" in _model(report, "image")["note"]


def test_report_keeps_the_study_figures_beside_ours(report):
    assert _model(report, "weighted")["study_heading"] == 0.738


def test_report_marks_the_champion_as_default(report, registry):
    default = next(m for m in report["models"] if m["default"])
    assert default["version"] == registry["champion"].id


def test_report_measures_both_baselines(report):
    baselines = [m for m in report["models"] if m["group"] == "baseline"]
    assert all(m["subheading_top3"] is not None for m in baselines)


def test_report_counts_the_frozen_evaluation_rows(report, registry):
    assert report["dataset"]["test_count"] == registry["champion"].metrics["test"]["count"]


def test_report_calibration_has_fifteen_bins(report):
    assert len(report["calibration"]["bins"]) == 15


def test_report_coverage_ends_at_full_coverage(report):
    assert report["coverage"]["points"][-1]["coverage"] == 1.0


def test_report_measures_the_missing_photo_gap(report):
    gap = next(t for t in report["targets"] if "without a photo" in t["name"])
    assert gap["met"] is not None


def test_report_training_time_full_run_only(report):
    # The fixture's champion trained 2 epochs, fewer than a full run.
    timing = next(t for t in report["targets"] if "training time" in t["name"])
    assert timing["met"] is None


def test_report_says_no_photos_were_measured(report):
    assert any("No photographs" in note for note in report["notes"])


def test_report_is_json_serialisable(report):
    assert json.loads(json.dumps(report))["title"] == report["title"]


def test_report_command_writes_markdown_and_json(registry, tmp_path, capsys):
    output, figures = tmp_path / "report.md", tmp_path / "figures.json"
    code = main(["report", "--output", str(output), "--json", str(figures),
                 "--no-baselines"])
    assert (code, output.is_file(), figures.is_file()) == (0, True, True)


def test_report_command_prints_each_target(registry, tmp_path, capsys):
    main(["report", "--output", str(tmp_path / "report.html"), "--no-baselines"])
    assert "heading top-1" in capsys.readouterr().out


def test_report_targets_carry_numeric_values(report):
    heading = next(t for t in report["targets"] if t["name"] == "heading top-1")
    assert (heading["threshold"], heading["relation"]) == (0.75, ">=")


def test_report_names_the_study_models_training(report):
    assert "decided cases" in _model(report, "text")["note"]


def test_report_without_baselines_says_so(registry):
    ctx = registry["ctx"]
    report = build_report(ctx.sessions, ctx.store, "cpu", baselines=False)
    assert any("skipped" in note for note in report["notes"])


def test_report_command_creates_the_json_folder(registry, tmp_path, capsys):
    figures = tmp_path / "new" / "figures.json"
    main(["report", "--output", str(tmp_path / "report.html"), "--json", str(figures),
          "--no-baselines"])
    assert figures.is_file()


def test_report_command_rejects_an_unknown_format(registry, tmp_path, capsys):
    assert main(["report", "--output", str(tmp_path / "report.pdf")]) == 2
    assert ".html" in capsys.readouterr().err
