"""Reading and validating manifest rows (CSV or JSON Lines), one at a time."""

import csv
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.codes import CodeError, normalize_code

FIELDS = ("reference", "description", "hs_code", "declared_hs_code", "image")
MAX_DESCRIPTION_CHARS = 10_000
MAX_REFERENCE_CHARS = 200
# csv refuses fields over 128 KiB by default; read larger ones so the row
# is rejected with a clear reason instead of aborting the file.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")


class RowError(ValueError):
    """A manifest row that cannot be loaded; the message gives the reason."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class RawRow:
    """A manifest row as read, with the line it starts on."""

    line: int
    values: dict[str, Any]


@dataclass
class ManifestRow:
    """A validated manifest row, ready to become a declaration."""

    line: int
    reference: str
    description: str
    hs_code: str | None
    declared_hs_code: str | None
    image: str | None
    attributes: dict[str, Any] = field(default_factory=dict)


def read_rows(path: Path) -> Iterator[RawRow | RowError]:
    """Yield the rows of a CSV or JSON Lines file, or an error for an unreadable one."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path)
    return _read_csv(path)


def _read_csv(path: Path) -> Iterator[RawRow | RowError]:
    csv.field_size_limit(min(_CSV_FIELD_LIMIT, sys.maxsize))
    # Undecodable bytes become surrogates, so one bad row does not stop the file.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        line = reader.line_num + 1

        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield RowError(f"line {line}: malformed CSV: {error}", line)
                line = reader.line_num + 1
                continue

            if values:
                yield _csv_row(line, header, values)
            line = reader.line_num + 1


def _csv_row(line: int, header: list[str], values: list[str]) -> RawRow | RowError:
    if len(values) > len(header):
        return RowError(
            f"line {line}: {len(values)} fields but the header names {len(header)}",
            line,
        )
    return RawRow(line, dict(zip(header, values)))


def _read_jsonl(path: Path) -> Iterator[RawRow | RowError]:
    with path.open("rb") as file:
        for line, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                values = json.loads(raw.decode("utf-8-sig"))
            except UnicodeDecodeError:
                yield RowError(f"line {line}: invalid UTF-8", line)
                continue
            except json.JSONDecodeError as error:
                yield RowError(f"line {line}: invalid JSON: {error.msg}", line)
                continue
            if not isinstance(values, dict):
                yield RowError(f"line {line}: expected a JSON object", line)
                continue
            yield RawRow(line, values)


def parse_column_map(pairs: list[str]) -> dict[str, str]:
    """Parse `FIELD=COLUMN` pairs into a field-to-column mapping."""
    mapping = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not column:
            raise ValueError(f"column map {pair!r} is not FIELD=COLUMN")
        if name not in FIELDS:
            raise ValueError(
                f"column map names unknown field {name!r}; fields: {', '.join(FIELDS)}"
            )
        mapping[name] = column
    return mapping


def validate_row(
    raw: RawRow, column_map: dict[str, str], zero_pad: int | None
) -> ManifestRow:
    """Map, clean and check one row; raise RowError naming the line and reason."""
    columns = {name: column_map.get(name, name) for name in FIELDS}
    values = {name: raw.values.get(column) for name, column in columns.items()}
    attributes = {
        storable_text(key): _json_value(value)
        for key, value in raw.values.items()
        if key not in columns.values()
    }
    try:
        return ManifestRow(
            line=raw.line,
            reference=_reference(values["reference"], raw.line),
            description=_description(values["description"]),
            hs_code=_code(values["hs_code"], "hs_code", zero_pad),
            declared_hs_code=_code(values["declared_hs_code"], "declared_hs_code",
                                   zero_pad),
            image=_optional_text(values["image"], "image"),
            attributes=attributes,
        )
    except RowError as error:
        raise RowError(f"line {raw.line}: {error}", raw.line) from None


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        value = "" if value is None else str(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(f"{name} is not valid UTF-8") from None
    return value


def storable_text(text: str) -> str:
    """Return text without the characters that PostgreSQL cannot store.

    Lone surrogates from undecodable CSV bytes become '?', and NUL is removed.
    """
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _json_value(value: Any) -> Any:
    """Return an attribute value that PostgreSQL's JSONB type accepts."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        # Python's json reads NaN and Infinity, which JSON itself lacks.
        return None
    return value


def _optional_text(value: Any, name: str) -> str | None:
    text = _text(value, name).strip()
    if _CONTROL.search(text):
        raise RowError(f"{name} {text[:40]!r} contains control characters")
    return text or None


def _reference(value: Any, line: int) -> str:
    reference = _optional_text(value, "reference") or str(line)
    if len(reference) > MAX_REFERENCE_CHARS:
        raise RowError(
            f"reference has {len(reference)} characters; the limit is "
            f"{MAX_REFERENCE_CHARS}"
        )
    return reference


def _description(value: Any) -> str:
    text = _CONTROL.sub(" ", _text(value, "description"))
    text = _WHITESPACE.sub(" ", text).strip()
    if not text:
        raise RowError("description is missing or blank")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise RowError(
            f"description has {len(text)} characters; the limit is "
            f"{MAX_DESCRIPTION_CHARS}"
        )
    return text


def _code(value: Any, name: str, zero_pad: int | None) -> str | None:
    try:
        return normalize_code(_text(value, name), zero_pad)
    except CodeError as error:
        raise RowError(f"{name}: {error}") from None
