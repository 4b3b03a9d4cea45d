"""HS code normalisation: digits only, 6 to 10 of them."""

import re

MIN_CODE_DIGITS = 6
MAX_CODE_DIGITS = 10
_SEPARATORS = re.compile(r"[\s.\-]")
_DIGITS = re.compile(r"[0-9]+")


class CodeError(ValueError):
    """A decided or declared HS code that cannot be used."""


def normalize_code(raw: object, zero_pad: int | None = None) -> str | None:
    """Return the code's digits; None when blank.

    Dots, dashes and spaces are removed. `zero_pad` restores the leading zero
    that a source lost by storing `zero_pad`-digit codes as numbers.
    """
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        return None

    digits = _SEPARATORS.sub("", text)
    if not _DIGITS.fullmatch(digits):
        raise CodeError(f"HS code {text[:40]!r} contains characters other than digits")
    # Only chapters 01 to 09 start with a zero, so a number loses at most one
    # digit. Padding a shorter code would invent chapter 00.
    if zero_pad and len(digits) == zero_pad - 1:
        digits = "0" + digits
    if not MIN_CODE_DIGITS <= len(digits) <= MAX_CODE_DIGITS:
        raise CodeError(
            f"HS code {text[:40]!r} has {len(digits)} digits; expected "
            f"{MIN_CODE_DIGITS} to {MAX_CODE_DIGITS}"
        )
    return digits


def heading_of(code: str) -> str:
    """Return the HS heading (first 4 digits) of a code."""
    return code[:4]


def subheading_of(code: str) -> str:
    """Return the HS subheading (first 6 digits) of a code."""
    return code[:6]
