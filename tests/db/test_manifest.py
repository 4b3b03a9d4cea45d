"""Tests for reading and validating manifest rows in db.manifest."""

import json
from pathlib import Path

import pytest

from db.manifest import (
    MAX_DESCRIPTION_CHARS,
    ManifestRow,
    RawRow,
    RowError,
    parse_column_map,
    read_rows,
    validate_row,
)

HEADER = "reference,description,hs_code,declared_hs_code,image\n"


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def write_csv(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    return write_bytes(tmp_path, "manifest.csv", (header + body).encode("utf-8"))


def write_jsonl(tmp_path: Path, records: list[dict]) -> Path:
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return write_bytes(tmp_path, "manifest.jsonl", text.encode("utf-8"))


def load(
    path: Path, column_map: dict[str, str] | None = None, zero_pad: int | None = None
) -> list[ManifestRow | RowError]:
    """Read and validate every row; errors are returned in place of rows."""
    results: list[ManifestRow | RowError] = []
    for item in read_rows(path):
        if isinstance(item, RowError):
            results.append(item)
            continue
        try:
            results.append(validate_row(item, column_map or {}, zero_pad))
        except RowError as error:
            results.append(error)
    return results


def only_row(results: list[ManifestRow | RowError]) -> ManifestRow:
    assert len(results) == 1
    row = results[0]
    assert isinstance(row, ManifestRow), row
    return row


def only_error(results: list[ManifestRow | RowError]) -> RowError:
    errors = [item for item in results if isinstance(item, RowError)]
    assert len(errors) == 1, results
    return errors[0]


def test_csv_reads_all_fields(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1,Laptop computer,8471.30-0000,847130,a.jpg\n")

    row = only_row(load(path))

    assert row.line == 2
    assert row.reference == "R1"
    assert row.description == "Laptop computer"
    assert row.hs_code == "8471300000"
    assert row.declared_hs_code == "847130"
    assert row.image == "a.jpg"
    assert row.attributes == {}


def test_csv_byte_order_mark_ignored(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + (HEADER + "R1,Laptop,847130,,\n").encode("utf-8")
    path = write_bytes(tmp_path, "bom.csv", data)

    row = only_row(load(path))

    assert row.reference == "R1"
    assert "\ufeffreference" not in row.attributes


def test_csv_blank_values_are_none(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1,Laptop,, ,\n")

    row = only_row(load(path))

    assert row.hs_code is None
    assert row.declared_hs_code is None
    assert row.image is None


def test_csv_fewer_fields_than_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1,Laptop\n")

    row = only_row(load(path))

    assert row.hs_code is None
    assert row.image is None


def test_csv_empty_file_yields_nothing(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "empty.csv", b"")

    assert load(path) == []


def test_csv_header_only_yields_nothing(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "")

    assert load(path) == []


def test_csv_blank_lines_skipped(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1,Laptop,,,\n\n\nR2,Phone,,,\n")

    rows = load(path)

    assert [row.line for row in rows] == [2, 5]


def test_csv_multiline_field_keeps_lines(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 'R1,"Laptop\ncomputer\nwith bag",,,\nR2,Phone,,,\n')

    first, second = load(path)

    assert first.line == 2
    assert first.description == "Laptop computer with bag"
    assert second.line == 5


def test_csv_crlf_line_endings(tmp_path: Path) -> None:
    text = HEADER.replace("\n", "\r\n") + "R1,Laptop,847130,,\r\nR2,Phone,851713,,\r\n"
    path = write_bytes(tmp_path, "crlf.csv", text.encode("utf-8"))

    rows = load(path)

    assert [row.line for row in rows] == [2, 3]
    assert rows[0].hs_code == "847130"


def test_csv_extra_field_rejected(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1,Laptop,847130,,,surplus\nR2,Phone,,,\n")

    results = load(path)
    error = only_error(results)

    assert error.line == 2
    assert "6 fields but the header names 5" in str(error)
    assert isinstance(results[1], ManifestRow)


def test_csv_unknown_columns_in_attributes(tmp_path: Path) -> None:
    header = "reference,description,origin,weight_kg\n"
    path = write_csv(tmp_path, "R1,Laptop,KR,2.5\n", header=header)

    row = only_row(load(path))

    assert row.attributes == {"origin": "KR", "weight_kg": "2.5"}


def test_csv_header_names_stripped(tmp_path: Path) -> None:
    header = " reference , description ,hs_code\n"
    path = write_csv(tmp_path, "R1,Laptop,847130\n", header=header)

    row = only_row(load(path))

    assert row.reference == "R1"
    assert row.hs_code == "847130"


def test_csv_invalid_utf8_rejects_one_row(tmp_path: Path) -> None:
    data = (
        HEADER.encode()
        + b"R1,Laptop,847130,,\n"
        + b"R2,Caf\xe9 table,940360,,\n"
        + "R3,노트북 컴퓨터,847130,,\n".encode()
    )
    path = write_bytes(tmp_path, "latin1.csv", data)

    results = load(path)
    error = only_error(results)

    assert error.line == 3
    assert "description is not valid UTF-8" in str(error)
    assert [r.reference for r in results if isinstance(r, ManifestRow)] == ["R1", "R3"]
    assert results[2].description == "노트북 컴퓨터"


def test_csv_invalid_utf8_in_attribute_replaced(tmp_path: Path) -> None:
    data = b"reference,description,maker\nR1,Laptop,Soci\xe9t\xe9\n"
    path = write_bytes(tmp_path, "maker.csv", data)

    row = only_row(load(path))

    assert row.attributes["maker"] == "Soci?t?"


def test_csv_huge_description_rejected_clearly(tmp_path: Path) -> None:
    # The field exceeds csv's default limit of 128 KiB, so this checks that the
    # row fails on the description limit and that the next row is still read.
    huge = "x" * 1_000_000
    path = write_csv(tmp_path, f"R1,{huge},847130,,\nR2,Phone,851713,,\n")

    results = load(path)
    error = only_error(results)

    assert error.line == 2
    assert "description has 1000000 characters" in str(error)
    assert f"the limit is {MAX_DESCRIPTION_CHARS}" in str(error)
    assert results[1].reference == "R2"


def test_description_at_limit_accepted(tmp_path: Path) -> None:
    text = "y" * MAX_DESCRIPTION_CHARS
    path = write_csv(tmp_path, f"R1,{text},,,\n")

    assert only_row(load(path)).description == text


def test_description_control_characters_cleaned(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        [{"reference": "R1", "description": "Lap\x00top\x07 \x1b[31mbag\x7f"}],
    )

    row = only_row(load(path))

    assert row.description == "Lap top [31mbag"


def test_description_whitespace_runs_collapsed(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 'R1,"  Steel \t\t bolts\r\n M8  ",,,\n')

    row = only_row(load(path))

    assert row.description == "Steel bolts M8"


@pytest.mark.parametrize("description", ["", "   ", "\x00\x01\t"])
def test_description_blank_rejected(tmp_path: Path, description: str) -> None:
    path = write_jsonl(tmp_path, [{"reference": "R1", "description": description}])

    error = only_error(load(path))

    assert str(error) == "line 1: description is missing or blank"


def test_description_missing_column_rejected(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1\n", header="reference\n")

    error = only_error(load(path))

    assert error.line == 2
    assert "description is missing or blank" in str(error)


def test_reference_defaults_to_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ",Laptop,,,\n,Phone,,,\n")

    rows = load(path)

    assert [row.reference for row in rows] == ["2", "3"]


def test_reference_default_jsonl_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, [{"description": "Laptop"}])

    assert only_row(load(path)).reference == "1"


def test_reference_too_long_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, [{"reference": "r" * 201, "description": "Laptop"}])

    error = only_error(load(path))

    assert "reference has 201 characters; the limit is 200" in str(error)


@pytest.mark.parametrize("reference", ["R\x001", "R\x1b1", "R\x7f"])
def test_reference_control_character_rejected(tmp_path: Path, reference: str) -> None:
    path = write_jsonl(tmp_path, [{"reference": reference, "description": "Pen"}])

    error = only_error(load(path))

    expected = f"line 1: reference {reference!r} contains control characters"
    assert str(error) == expected


def test_image_nul_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, [{"description": "Pen", "image": "a\x00.jpg"}])

    error = only_error(load(path))

    assert str(error) == "line 1: image 'a\\x00.jpg' contains control characters"


def test_reference_number_becomes_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, [{"reference": 12345, "description": "Laptop"}])

    assert only_row(load(path)).reference == "12345"


def test_code_error_names_field_and_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1,Laptop,847130,84AB30,\n")

    error = only_error(load(path))

    assert error.line == 2
    assert str(error).startswith("line 2: declared_hs_code: HS code '84AB30'")


def test_zero_pad_applies_to_both_codes(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1,Beef,201300000,201290000,\n")

    row = only_row(load(path, zero_pad=10))

    assert row.hs_code == "0201300000"
    assert row.declared_hs_code == "0201290000"


def test_zero_pad_keeps_subheading(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "R1,Laptop,847130,,\n")

    assert only_row(load(path, zero_pad=10)).hs_code == "847130"


def test_jsonl_reads_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        [
            {"reference": "R1", "description": "Laptop", "hs_code": "8471.30"},
            {"reference": "R2", "description": "Phone", "hs_code": 851713},
        ],
    )

    first, second = load(path)

    assert (first.line, first.hs_code) == (1, "847130")
    assert (second.line, second.hs_code) == (2, "851713")


def test_jsonl_byte_order_mark_ignored(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + b'{"reference": "R1", "description": "Laptop"}\n'
    path = write_bytes(tmp_path, "bom.jsonl", data)

    assert only_row(load(path)).reference == "R1"


def test_jsonl_ndjson_suffix_read_as_json(tmp_path: Path) -> None:
    path = write_bytes(
        tmp_path, "rows.NDJSON", b'{"reference": "R1", "description": "Laptop"}\n'
    )

    assert only_row(load(path)).reference == "R1"


def test_jsonl_blank_lines_keep_numbers(tmp_path: Path) -> None:
    data = b'{"description": "Laptop"}\n\n   \n{"description": "Phone"}\n'
    path = write_bytes(tmp_path, "gaps.jsonl", data)

    rows = load(path)

    assert [row.line for row in rows] == [1, 4]


def test_jsonl_invalid_utf8_rejects_one_line(tmp_path: Path) -> None:
    data = (
        b'{"reference": "R1", "description": "Laptop"}\n'
        b'{"reference": "R2", "description": "Caf\xe9"}\n'
        b'{"reference": "R3", "description": "Phone"}\n'
    )
    path = write_bytes(tmp_path, "latin1.jsonl", data)

    results = load(path)
    error = only_error(results)

    assert str(error) == "line 2: invalid UTF-8"
    assert [r.reference for r in results if isinstance(r, ManifestRow)] == ["R1", "R3"]


def test_jsonl_lone_surrogate_rejected(tmp_path: Path) -> None:
    # JSON allows the escape, but the text cannot be stored as UTF-8.
    data = b'{"reference": "R1", "description": "bad \\udcff text"}\n'
    path = write_bytes(tmp_path, "surrogate.jsonl", data)

    error = only_error(load(path))

    assert "description is not valid UTF-8" in str(error)


def test_jsonl_malformed_line_rejected(tmp_path: Path) -> None:
    data = (
        b'{"reference": "R1", "description": "Laptop"}\n'
        b'{"reference": "R2", "description": \n'
        b'{"reference": "R3", "description": "Phone"}\n'
    )
    path = write_bytes(tmp_path, "broken.jsonl", data)

    results = load(path)
    error = only_error(results)

    assert error.line == 2
    assert str(error).startswith("line 2: invalid JSON: ")
    assert len(results) == 3


@pytest.mark.parametrize("line", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_jsonl_non_object_rejected(tmp_path: Path, line: bytes) -> None:
    path = write_bytes(tmp_path, "array.jsonl", line + b"\n")

    error = only_error(load(path))

    assert str(error) == "line 1: expected a JSON object"


def test_jsonl_unknown_keys_in_attributes(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        [{"description": "Laptop", "origin": "KR", "weight": 2.5, "tags": ["a"]}],
    )

    row = only_row(load(path))

    assert row.attributes == {"origin": "KR", "weight": 2.5, "tags": ["a"]}


def test_attributes_nul_removed(tmp_path: Path) -> None:
    # PostgreSQL stores no U+0000 in text or JSONB.
    record = {"description": "Pen", "note": "a\x00b", "k\x00": ["x\x00"]}
    path = write_jsonl(tmp_path, [record])

    row = only_row(load(path))

    assert row.attributes == {"note": "ab", "k": ["x"]}


def test_attributes_nested_surrogate_replaced(tmp_path: Path) -> None:
    data = b'{"description": "Pen", "maker": {"name\\udcff": ["\\udcff"]}}\n'
    path = write_bytes(tmp_path, "nested.jsonl", data)

    row = only_row(load(path))

    assert row.attributes == {"maker": {"name?": ["?"]}}


def test_attributes_non_finite_become_null(tmp_path: Path) -> None:
    data = b'{"description": "Pen", "a": NaN, "b": -Infinity, "c": 1.5}\n'
    path = write_bytes(tmp_path, "nan.jsonl", data)

    row = only_row(load(path))

    assert row.attributes == {"a": None, "b": None, "c": 1.5}


def test_csv_invalid_utf8_header_replaced(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "header.csv", b"description,Pa\xefs\nPen,KR\n")

    row = only_row(load(path))

    assert row.attributes == {"Pa?s": "KR"}


def test_column_map_parsed() -> None:
    mapping = parse_column_map(["hs_code=HSK", "description=품명"])

    assert mapping == {"hs_code": "HSK", "description": "품명"}


def test_column_map_value_may_contain_equals() -> None:
    assert parse_column_map(["image=a=b"]) == {"image": "a=b"}


def test_column_map_unknown_field_rejected() -> None:
    with pytest.raises(ValueError, match="unknown field 'hscode'; fields: reference"):
        parse_column_map(["hscode=HSK"])


@pytest.mark.parametrize("pair", ["hs_code", "hs_code=", ""])
def test_column_map_missing_column_rejected(pair: str) -> None:
    with pytest.raises(ValueError, match="is not FIELD=COLUMN"):
        parse_column_map([pair])


def test_column_map_renames_columns(tmp_path: Path) -> None:
    header = "신고번호,품명,HSK,origin\n"
    path = write_csv(tmp_path, "K-1,노트북,8471.30-0000,KR\n", header=header)
    mapping = parse_column_map(
        ["reference=신고번호", "description=품명", "hs_code=HSK"]
    )

    row = only_row(load(path, column_map=mapping))

    assert row.reference == "K-1"
    assert row.description == "노트북"
    assert row.hs_code == "8471300000"
    assert row.attributes == {"origin": "KR"}


def test_column_map_default_name_in_attributes(tmp_path: Path) -> None:
    # A column named like a field but not mapped to it stays an attribute.
    header = "description,goods\n"
    path = write_csv(tmp_path, "old text,Laptop\n", header=header)

    row = only_row(load(path, column_map={"description": "goods"}))

    assert row.description == "Laptop"
    assert row.attributes == {"description": "old text"}


def test_validate_row_without_reading() -> None:
    raw = RawRow(7, {"description": "Laptop", "hs_code": "847130"})

    row = validate_row(raw, {}, None)

    assert row.line == 7
    assert row.reference == "7"
