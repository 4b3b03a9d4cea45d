"""Tests for HS code normalisation in db.codes."""

import pytest

from db.codes import CodeError, heading_of, normalize_code, subheading_of


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8471.30", "847130"),
        ("8471.30-0000", "8471300000"),
        ("8471 30 00 00", "8471300000"),
        (" 847130 ", "847130"),
        ("8471\t30", "847130"),
        (8471300000, "8471300000"),
    ],
)
def test_normalize_code_removes_separators(raw: object, expected: str) -> None:
    assert normalize_code(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "\t\n"])
def test_normalize_code_blank_is_none(raw: object) -> None:
    assert normalize_code(raw) is None


@pytest.mark.parametrize("raw", ["8471AB", "84713O", "8471/30", "8471_30", "847130+"])
def test_normalize_code_rejects_non_digits(raw: str) -> None:
    with pytest.raises(CodeError, match="characters other than digits"):
        normalize_code(raw)


@pytest.mark.parametrize("raw", ["847130²", "８４７１３０", "٨٤٧١٣٠"])
def test_normalize_code_rejects_unicode_digits(raw: str) -> None:
    # str.isdigit() accepts these, but an HS code has ASCII digits only.
    with pytest.raises(CodeError, match="characters other than digits"):
        normalize_code(raw)


def test_normalize_code_rejects_five_digits() -> None:
    with pytest.raises(CodeError, match="has 5 digits; expected 6 to 10"):
        normalize_code("84713")


def test_normalize_code_rejects_eleven_digits() -> None:
    with pytest.raises(CodeError, match="has 11 digits; expected 6 to 10"):
        normalize_code("8471.30.00001")


def test_normalize_code_message_quotes_input() -> None:
    with pytest.raises(CodeError, match="'8471-3'"):
        normalize_code("8471-3")


def test_normalize_code_accepts_bounds() -> None:
    assert normalize_code("847130") == "847130"
    assert normalize_code("8471300000") == "8471300000"


def test_normalize_code_zero_pad_restores_zero() -> None:
    assert normalize_code("201300000", zero_pad=10) == "0201300000"


def test_normalize_code_zero_pad_on_integer() -> None:
    assert normalize_code(201300000, zero_pad=10) == "0201300000"


def test_normalize_code_zero_pad_keeps_full_code() -> None:
    assert normalize_code("8471300000", zero_pad=10) == "8471300000"


def test_normalize_code_zero_pad_six_digits() -> None:
    assert normalize_code("20130", zero_pad=6) == "020130"


def test_normalize_code_zero_pad_one_zero_only() -> None:
    # A number loses one zero at most, since no chapter is 00.
    assert normalize_code("847130", zero_pad=10) == "847130"
    assert normalize_code("02013000", zero_pad=10) == "02013000"


def test_normalize_code_zero_pad_not_truncating() -> None:
    with pytest.raises(CodeError, match="has 11 digits"):
        normalize_code("84713000001", zero_pad=10)


def test_normalize_code_without_pad_keeps_length() -> None:
    assert normalize_code("201300000") == "201300000"


def test_heading_and_subheading_of_code() -> None:
    assert heading_of("8471300000") == "8471"
    assert subheading_of("8471300000") == "847130"
