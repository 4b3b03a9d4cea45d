"""`hscode export`: review sheets in CSV and Excel."""

import csv

from openpyxl import load_workbook

from hscode.cli import main
from hscode.export import COLUMNS


def read_csv(path) -> list[dict]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        return list(csv.DictReader(file))


def test_export_without_suffix_writes_both(scored_env, tmp_path) -> None:
    main(["export", "--all", "--output", str(tmp_path / "sheet")])

    assert {p.name for p in tmp_path.iterdir()} == {"sheet.csv", "sheet.xlsx"}


def test_export_all_lists_every_prediction(scored_env, tmp_path) -> None:
    main(["export", "--all", "--output", str(tmp_path / "sheet.csv")])

    assert len(read_csv(tmp_path / "sheet.csv")) == 48


def test_export_flags_only_disagreements(scored_env, tmp_path) -> None:
    main(["export", "--output", str(tmp_path / "flags.csv")])

    rows = read_csv(tmp_path / "flags.csv")
    assert all(r["declared_hs_code"][:4] != r["heading"] for r in rows)


def test_export_needs_review_only(scored_env, tmp_path) -> None:
    main(["export", "--needs-review", "--output", str(tmp_path / "review.csv")])

    rows = read_csv(tmp_path / "review.csv")
    assert rows and all(r["needs_review"] == "yes" for r in rows)


def test_export_run_covers_its_declarations(scored_env, tmp_path) -> None:
    main(["export", "--all", "--run", "1", "--output", str(tmp_path / "run.csv")])

    assert len(read_csv(tmp_path / "run.csv")) == 48


def test_export_source_filter(scored_env, tmp_path) -> None:
    main(["export", "--all", "--source", "other", "--output", str(tmp_path / "o.csv")])

    assert read_csv(tmp_path / "o.csv") == []


def test_export_until_before_predictions_is_empty(scored_env, tmp_path) -> None:
    path = tmp_path / "old.csv"
    main(["export", "--all", "--until", "2000-01-01", "--output", str(path)])

    assert read_csv(path) == []


def test_export_unknown_run_exits_2(scored_env, tmp_path, capsys) -> None:
    status = main(["export", "--run", "999", "--output", str(tmp_path / "x.csv")])

    assert status == 2
    assert "run 999 not found" in capsys.readouterr().err


def test_export_xlsx_has_review_columns(scored_env, tmp_path) -> None:
    main(["export", "--all", "--output", str(tmp_path / "sheet.xlsx")])

    sheet = load_workbook(tmp_path / "sheet.xlsx").active
    assert [cell.value for cell in sheet[1]] == list(COLUMNS)


def test_export_lists_evidence(scored_env, tmp_path) -> None:
    main(["export", "--all", "--output", str(tmp_path / "sheet.csv")])

    assert all(row["evidence_3"] for row in read_csv(tmp_path / "sheet.csv"))
