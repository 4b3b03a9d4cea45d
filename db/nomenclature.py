"""Names of HS chapters, headings and subheadings from the shipped files."""

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

HS_EDITION = "HS2022"
"""Edition of the English nomenclature file (`hs2022.csv`)."""

_MAX_JOINED_LINES = 3


@dataclass(frozen=True)
class CodeName:
    """English and Korean names of one code; either may be missing."""

    code: str
    name_en: str | None
    name_ko: str | None

    @property
    def level(self) -> int:
        return len(self.code)


def default_nomenclature_dir() -> Path:
    """Return `HSCODE_NOMENCLATURE_DIR`, or the repository's `data/nomenclature`."""
    configured = os.environ.get("HSCODE_NOMENCLATURE_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1] / "data" / "nomenclature"


def load_code_names(folder: Path | None = None) -> dict[str, CodeName]:
    """Load names for 2-, 4- and 6-digit codes from both nomenclature files.

    English names come from the HS 2022 file, then from the Korean tariff
    table. Korean names come from the tariff table at the code's own length,
    then from the 10-digit tariff lines under a subheading, since the table
    lacks 6-digit entries for many subheadings.
    """
    folder = folder or default_nomenclature_dir()
    english = _read_hs2022(folder / "hs2022.csv")
    tariff = _read_tariff_table(folder / "hsk-tariff-table.json")

    lines_by_subheading: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(tariff):
        if len(key) == 10:
            lines_by_subheading.setdefault(key[:6], []).append(tariff[key])

    codes = set(english) | {c for c in tariff if len(c) in (2, 4, 6)}
    codes |= set(lines_by_subheading)
    names = {}
    for code in sorted(codes):
        lines = lines_by_subheading.get(code, [])
        en_tariff, ko = tariff.get(code) or _join_lines(lines)
        names[code] = CodeName(code, english.get(code) or en_tariff, ko)
    return names


def _read_hs2022(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        rows = csv.DictReader(file)
        return {
            row["hscode"]: row["description"]
            for row in rows
            if row["hscode"].isdigit() and len(row["hscode"]) in (2, 4, 6)
        }


def _read_tariff_table(path: Path) -> dict[str, tuple[str, str]]:
    with path.open(encoding="utf-8") as file:
        records = json.load(file)
    return {
        r["품목번호"].strip(): (r["영문품명"].strip(), r["한글품명"].strip())
        for r in records
    }


def _join_lines(lines: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    if not lines:
        return None, None
    first = lines[:_MAX_JOINED_LINES]
    english = "; ".join(dict.fromkeys(en for en, _ in first))
    korean = "; ".join(dict.fromkeys(ko for _, ko in first))
    return english, korean
