"""`hscode export`: flagged, needing-review or all predictions as a review sheet."""

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font
from sqlalchemy import DateTime, bindparam, select, text
from sqlalchemy.orm import Session

from db.models import HsCode, ScoringChunk, ScoringRun

ID_QUERY_ROWS = 5000
"""Declaration ids per query, below every database's parameter limit."""

COLUMNS = (
    "declaration_id",
    "reference",
    "source",
    "description",
    "declared_hs_code",
    "declared_name",
    "heading",
    "heading_name_en",
    "heading_name_ko",
    "heading_probability",
    "subheading",
    "subheading_name_en",
    "subheading_name_ko",
    "subheading_probability",
    "alternatives",
    "evidence_1",
    "evidence_2",
    "evidence_3",
    "needs_review",
    "predicted_at",
    "decision",
    "decided_code",
    "reviewer",
)
"""Columns of the review sheet; `hscode review` reads the last three back."""


@dataclass(frozen=True)
class ExportFilter:
    """Filter that selects the predictions to export."""

    run_id: int | None = None
    source: str | None = None
    since: date | None = None
    until: date | None = None
    all_predictions: bool = False
    needs_review: bool = False
    """Only predictions below the auto-accept threshold, flagged or not."""


def output_paths(path: Path) -> list[Path]:
    """Return the files to write: by suffix, or both `.csv` and `.xlsx`."""
    if path.suffix.lower() in (".csv", ".xlsx"):
        return [path]
    return [path.with_name(path.name + ".csv"), path.with_name(path.name + ".xlsx")]


def select_rows(session: Session, selection: ExportFilter) -> list[dict]:
    """Return the sheet rows of the selected predictions, by declaration id."""
    conditions, params = [], {}
    view = "screening_flags"
    if selection.all_predictions or selection.needs_review:
        view = "latest_predictions"
    if selection.needs_review:
        conditions.append("needs_review")
    if selection.source is not None:
        conditions.append("source = :source")
        params["source"] = selection.source
    if selection.since is not None:
        conditions.append("predicted_at >= :since")
        params["since"] = _start_of(selection.since)
    if selection.until is not None:
        conditions.append("predicted_at < :until")
        params["until"] = _start_of(selection.until + timedelta(days=1))

    if selection.run_id is None:
        found = _query(session, view, conditions, params, None)
    else:
        ids = run_declaration_ids(session, selection.run_id)
        found = []
        for start in range(0, len(ids), ID_QUERY_ROWS):
            found += _query(
                session, view, conditions, params, ids[start : start + ID_QUERY_ROWS]
            )
    names = _code_names(session, [r["declared_hs_code"] for r in found])
    return [_sheet_row(r, names) for r in sorted(found, key=_declaration_id)]


def _declaration_id(row: dict) -> int:
    return row["declaration_id"]


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _query(session, view, conditions, params, ids) -> list[dict]:
    conditions = list(conditions)
    if ids is not None:
        conditions.append("declaration_id IN :ids")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # The view name comes from a fixed pair, never from the user.
    statement = text(f"SELECT * FROM {view}{where}").bindparams(
        *[
            bindparam(n, type_=DateTime(timezone=True))
            for n in ("since", "until")
            if n in params
        ],
        *([bindparam("ids", expanding=True)] if ids is not None else []),
    )
    values = {**params, **({"ids": ids} if ids is not None else {})}
    return [dict(row._mapping) for row in session.execute(statement, values)]


def run_declaration_ids(session: Session, run_id: int) -> list[int]:
    """Return the declaration ids a scoring run covered, from its chunks."""
    if session.get(ScoringRun, run_id) is None:
        raise LookupError(f"scoring run {run_id} not found; see `hscode status`")
    chunks = session.scalars(
        select(ScoringChunk.declaration_ids).where(ScoringChunk.run_id == run_id)
    )
    return sorted({int(i) for ids in chunks for i in ids})


def _code_names(session: Session, codes: Sequence[str | None]) -> dict[str, str]:
    wanted = {c[:n] for c in codes if c for n in (4, 6)}
    if not wanted:
        return {}
    rows = session.execute(
        select(HsCode.code, HsCode.name_en, HsCode.name_ko).where(
            HsCode.code.in_(sorted(wanted))
        )
    )
    return {code: en or ko or "" for code, en, ko in rows}


def _sheet_row(row: dict, names: dict[str, str]) -> dict:
    declared = row["declared_hs_code"]
    top_k = _json(row["top_k"]) or []
    evidence = _json(row["evidence"]) or {}
    cases = evidence.get("cases", [])
    sheet = {name: row.get(name) for name in COLUMNS}
    sheet.update(
        {
            "declared_name": _declared_name(declared, names),
            "alternatives": "; ".join(
                f"{alt['subheading']} ({alt['probability']:.3f})"
                for alt in top_k
                if alt.get("subheading") != row["subheading"]
            ),
            "needs_review": _yes_no(row["needs_review"]),
            "predicted_at": _timestamp(row["predicted_at"]),
            "decision": "",
            "decided_code": "",
            "reviewer": "",
        }
    )
    for number in range(1, 4):
        case = cases[number - 1] if len(cases) >= number else None
        sheet[f"evidence_{number}"] = _describe_case(case)
    return sheet


def _json(value):
    # SQLite returns JSON columns of a raw query as text.
    return json.loads(value) if isinstance(value, str) else value


def _declared_name(code: str | None, names: dict[str, str]) -> str:
    if not code:
        return ""
    return names.get(code[:6]) or names.get(code[:4]) or ""


def _yes_no(value) -> str:
    if value is None:
        return ""
    return "yes" if value else "no"


def _timestamp(value) -> str:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return "" if value is None else str(value)[:19]


def _describe_case(case: dict | None) -> str:
    if case is None:
        return ""
    return (
        f"{case['reference']} | {case['hs_code']} | {case['description']} "
        f"(similarity {case['similarity']:.2f}, declaration "
        f"{case['declaration_id']})"
    )


def write_sheet(rows: list[dict], path: Path) -> list[Path]:
    """Write the rows to the files `output_paths` names; return them."""
    written = []
    for target in output_paths(path):
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix.lower() == ".csv":
            _write_csv(rows, target)
        else:
            _write_xlsx(rows, target)
        written.append(target)
    return written


def _write_csv(rows: list[dict], path: Path) -> None:
    # The byte-order mark makes Excel open the file as UTF-8 (Korean names).
    with path.open("w", encoding="utf-8-sig", newline="") as file:
        writer = csv.DictWriter(file, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _write_xlsx(rows: list[dict], path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "review"
    sheet.append(list(COLUMNS))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append([row[name] for name in COLUMNS])
    # Codes stay text, so a leading zero (chapters 01 to 09) survives.
    for column, name in enumerate(COLUMNS, start=1):
        if name.endswith(("hs_code", "heading", "subheading", "decided_code")):
            for (cell,) in sheet.iter_rows(min_row=2, min_col=column, max_col=column):
                cell.number_format = "@"
    sheet.freeze_panes = "B2"
    workbook.save(path)
