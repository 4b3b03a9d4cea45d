"""Accuracy reports rendered as self-contained HTML and as Markdown with PNG plots."""

import copy
import re

import pytest

from hscode.report_render import render_report


@pytest.fixture
def report() -> dict:
    """A small report with every section filled in."""
    return {
        "title": "HS-code accuracy report",
        "generated_at": "2025-01-31T12:00:00+00:00",
        "dataset": {
            "chapters": ["84", "85", "90"],
            "split": "Declarations are split by importer, 80/10/10.",
            "train_count": 8000,
            "validation_count": 1000,
            "test_count": 1000,
            "evaluation_set": "test split",
        },
        "notes": ["No labelled photos exist, so image accuracy is not measured."],
        "models": [
            {
                "name": "fused",
                "label": "Text + image",
                "group": "study",
                "version": 3,
                "heading_top1": 0.7041,
                "heading_top3": 0.9012,
                "subheading_top1": 0.6123,
                "subheading_top3": 0.8311,
                "study_heading": 0.72,
                "study_subheading": 0.63,
                "default": True,
                "note": None,
            },
            {
                "name": "tfidf",
                "label": "TF-IDF | logistic regression",
                "group": "baseline",
                "version": None,
                "heading_top1": 0.61,
                "heading_top3": 0.80,
                "subheading_top1": 0.50,
                "subheading_top3": 0.71,
                "study_heading": None,
                "study_subheading": None,
                "default": False,
                "note": "word n-grams",
            },
        ],
        "chapters": [
            {
                "chapter": "84",
                "count": 400,
                "heading_accuracy": 0.71,
                "subheading_accuracy": 0.60,
            },
            {
                "chapter": "85",
                "count": 350,
                "heading_accuracy": 0.68,
                "subheading_accuracy": 0.58,
            },
        ],
        "calibration": {
            "temperature": 1.42,
            "ece": 0.021,
            "ece_uncalibrated": 0.083,
            "bins": [
                {
                    "lower": i / 15,
                    "upper": (i + 1) / 15,
                    "count": 0 if i < 3 else 10 * i,
                    "confidence": None if i < 3 else (i + 0.5) / 15,
                    "accuracy": None if i < 3 else (i + 0.2) / 15,
                }
                for i in range(15)
            ],
        },
        "coverage": {
            "points": [
                {"threshold": 0.95, "coverage": 0.2, "precision": 0.99},
                {"threshold": 0.8, "coverage": 0.5, "precision": 0.97},
                {"threshold": 0.0, "coverage": 1.0, "precision": 0.70},
            ],
            "target_precision": 0.97,
            "auto_accept_share": 0.5,
            "auto_accept_threshold": 0.8,
        },
        "confused_pairs": [
            {
                "decided": "8471",
                "decided_name": "Computers",
                "predicted": "8473",
                "predicted_name": "Parts of computers",
                "count": 12,
            }
        ],
        "targets": [
            {
                "name": "heading top-1",
                "target": "≥ 70%",
                "measured": "70.4%",
                "met": True,
            },
            {
                "name": "image accuracy",
                "target": "≥ 60%",
                "measured": "not measured",
                "met": None,
            },
        ],
    }


@pytest.fixture
def empty_report(report) -> dict:
    """The sample report with every measured value set to None."""
    empty = copy.deepcopy(report)
    for model in empty["models"]:
        for key in model:
            if key not in ("name", "label", "group", "default"):
                model[key] = None
    for chapter in empty["chapters"]:
        chapter["heading_accuracy"] = chapter["subheading_accuracy"] = None
    empty["calibration"] = {
        "temperature": None,
        "ece": None,
        "ece_uncalibrated": None,
        "bins": [],
    }
    empty["coverage"]["auto_accept_share"] = None
    empty["coverage"]["auto_accept_threshold"] = None
    empty["coverage"]["points"] = []
    empty["dataset"]["test_count"] = None
    empty["confused_pairs"] = None
    return empty


def markdown_links(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def test_render_html_returns_only_the_html_file(report, tmp_path) -> None:
    path = tmp_path / "report.html"

    assert render_report(report, path) == [path]


def test_render_html_embeds_plots_as_data_uris(report, tmp_path) -> None:
    path = tmp_path / "report.html"
    render_report(report, path)

    assert path.read_text(encoding="utf-8").count("data:image/png;base64,") == 4


def test_render_html_loads_no_external_resources(report, tmp_path) -> None:
    path = tmp_path / "report.html"
    render_report(report, path)

    assert not re.search(r"(src|href)=\"(https?:)?//", path.read_text(encoding="utf-8"))


def test_render_html_escapes_script_in_note(report, tmp_path) -> None:
    report["notes"].append("<script>alert(1)</script>")
    path = tmp_path / "report.html"
    render_report(report, path)

    assert "<script>" not in path.read_text(encoding="utf-8")


def test_render_html_marks_default_model(report, tmp_path) -> None:
    path = tmp_path / "report.html"
    render_report(report, path)

    assert "Text + image (champion)" in path.read_text(encoding="utf-8")


def test_render_html_prints_percent_with_one_decimal(report, tmp_path) -> None:
    path = tmp_path / "report.html"
    render_report(report, path)

    assert "<td>70.4%</td>" in path.read_text(encoding="utf-8")


def test_render_html_states_auto_accept_share(report, tmp_path) -> None:
    path = tmp_path / "report.html"
    render_report(report, path)

    assert (
        "At 97% heading precision, 50.0% of declarations can be auto-accepted "
        "(heading probability at least 0.800)."
    ) in path.read_text(encoding="utf-8")


def test_render_html_lists_groups_in_order(report, tmp_path) -> None:
    path = tmp_path / "report.html"
    render_report(report, path)

    text = path.read_text(encoding="utf-8")
    assert text.index("Study models") < text.index("Baselines")


def test_render_htm_suffix_writes_html(report, tmp_path) -> None:
    path = tmp_path / "report.HTM"
    render_report(report, path)

    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_render_creates_parent_folders(report, tmp_path) -> None:
    path = tmp_path / "a" / "b" / "report.html"
    render_report(report, path)

    assert path.is_file()


def test_render_markdown_returns_file_and_pngs(report, tmp_path) -> None:
    path = tmp_path / "report.md"
    written = render_report(report, path)

    assert [p.name for p in written] == [
        "report.md",
        "models.png",
        "chapters.png",
        "calibration.png",
        "coverage.png",
    ]


def test_render_markdown_writes_pngs_beside_it(report, tmp_path) -> None:
    written = render_report(report, tmp_path / "report.md")

    assert {p.parent.name for p in written[1:]} == {"report_files"}


def test_render_markdown_links_exist(report, tmp_path) -> None:
    path = tmp_path / "report.md"
    render_report(report, path)

    links = markdown_links(path.read_text(encoding="utf-8"))
    assert links and all((tmp_path / link).is_file() for link in links)


def test_render_markdown_links_are_png_files(report, tmp_path) -> None:
    path = tmp_path / "report.md"
    render_report(report, path)

    links = markdown_links(path.read_text(encoding="utf-8"))
    assert all(
        (tmp_path / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for link in links
    )


def test_render_markdown_quotes_spaces_in_links(report, tmp_path) -> None:
    path = tmp_path / "my report.md"
    render_report(report, path)

    assert "](my%20report_files/models.png)" in path.read_text(encoding="utf-8")


def test_render_markdown_escapes_pipe_in_model_name(report, tmp_path) -> None:
    path = tmp_path / "report.md"
    render_report(report, path)

    assert r"TF-IDF \| logistic regression" in path.read_text(encoding="utf-8")


def test_render_markdown_marks_default_model(report, tmp_path) -> None:
    path = tmp_path / "report.md"
    render_report(report, path)

    assert "**Text + image (champion)**" in path.read_text(encoding="utf-8")


def test_render_markdown_escapes_html_tag_in_note(report, tmp_path) -> None:
    report["notes"].append("<script>alert(1)</script>")
    path = tmp_path / "report.md"
    render_report(report, path)

    assert "<script>" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["report.html", "report.md"])
def test_render_none_values_shows_not_measured(empty_report, tmp_path, name) -> None:
    path = tmp_path / name
    render_report(empty_report, path)

    assert "Temperature: not measured." in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["report.html", "report.md"])
def test_render_none_values_states_no_threshold(empty_report, tmp_path, name) -> None:
    path = tmp_path / name
    render_report(empty_report, path)

    assert "No heading-probability threshold reaches 97%" in path.read_text(
        encoding="utf-8"
    )


def test_render_none_values_writes_no_pngs(empty_report, tmp_path) -> None:
    path = tmp_path / "report.md"

    assert render_report(empty_report, path) == [path]


def test_render_unmeasured_target_says_not_measured(report, tmp_path) -> None:
    path = tmp_path / "report.html"
    render_report(report, path)

    assert "<td>≥ 60%</td><td>not measured</td><td>not measured</td>" in (
        path.read_text(encoding="utf-8")
    )


def test_render_missing_sections_renders(tmp_path) -> None:
    path = tmp_path / "report.md"
    render_report({"title": "Empty"}, path)

    assert path.read_text(encoding="utf-8").startswith("# Empty")


def test_render_unknown_suffix_raises(report, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"\.html, \.htm, \.md, \.markdown"):
        render_report(report, tmp_path / "report.pdf")
