"""`hscode review`: read a review sheet back and apply its decisions."""

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from openpyxl import load_workbook
from sqlalchemy.orm import Session, sessionmaker

from db.models import Declaration
from db.review import (
    ReviewError,
    apply_decision,
    is_recorded,
    parse_decision,
    resolve_code,
)

REQUIRED_COLUMNS = ("declaration_id", "decision")


@dataclass
class ReviewReport:
    """Counts of a sheet's decisions, with the line and reason of each rejected one."""

    applied: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def read_sheet(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line, row) of a CSV or XLSX review sheet; line 1 is the header."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".xlsx":
        yield from _read_xlsx(path)
    else:
        raise ReviewError(f"{path}: expected a .csv or .xlsx review sheet")


def _read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        _check_columns(path, reader.fieldnames or [])
        for row in reader:
            yield reader.line_num, row


def _read_xlsx(path: Path) -> Iterator[tuple[int, dict]]:
    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        rows = workbook.active.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(rows, [])]
        _check_columns(path, header)
        for line, values in enumerate(rows, start=2):
            yield line, dict(zip(header, values))
    finally:
        workbook.close()


def _check_columns(path: Path, header: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ReviewError(
            f"{path}: column {', '.join(missing)} missing; export the sheet with "
            "`hscode export` and fill in its decision column"
        )


def import_sheet(
    sessions: sessionmaker[Session], path: Path, reviewer: str
) -> ReviewReport:
    """Apply every filled decision of a sheet; rejected rows are reported."""
    report = ReviewReport()
    with sessions() as session, session.begin():
        for line, row in read_sheet(path):
            try:
                applied = _apply_row(session, row, reviewer, path.name)
            except ReviewError as error:
                report.errors.append(f"line {line}: {error}")
                continue
            if applied:
                report.applied += 1
            else:
                report.skipped += 1
    return report


def _apply_row(session: Session, row: dict, reviewer: str, source_file: str) -> bool:
    """Apply one row's decision; return False when blank or already recorded."""
    decision = parse_decision(row.get("decision"))
    if decision is None:
        return False

    declaration = session.get(Declaration, _declaration_id(row.get("declaration_id")))
    if declaration is None:
        raise ReviewError(
            f"declaration {row.get('declaration_id')} not found; it may have been "
            "purged, or the sheet comes from another database"
        )
    reference = _text(row.get("reference"))
    if reference and reference != declaration.reference:
        raise ReviewError(
            f"declaration {declaration.id} has reference {declaration.reference!r}, "
            f"the sheet says {reference!r}; export the sheet again"
        )

    code = resolve_code(
        declaration, decision, _text(row.get("subheading")), row.get("decided_code")
    )
    # Loading the same sheet again records nothing new.
    if declaration.hs_code == code and is_recorded(session, declaration.id, decision, code):
        return False
    who = _text(row.get("reviewer")) or reviewer
    apply_decision(session, declaration, decision, code, who[:100], source_file)
    return True


def _declaration_id(raw: object) -> int:
    text = _text(raw)
    if not text:
        raise ReviewError("declaration_id is missing; keep the column as exported")
    try:
        return int(float(text))
    except ValueError:
        raise ReviewError(
            f"declaration_id {text[:20]!r} is not a number; keep the column as exported"
        ) from None


def _text(raw: object) -> str:
    if raw is None:
        return ""
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    return str(raw).strip()
