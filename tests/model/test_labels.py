"""Tests for the label space of subheadings and the headings above them."""

import torch

from model.labels import LabelSpace

CODES = ["8471300000", "0101210000", "8471300000", "847149", "0101290000"]
"""Decided codes of 10 and 6 digits, with one 10-digit code repeated."""


def create_space() -> LabelSpace:
    """Return the label space of CODES, with names for some of its codes."""
    names = {
        "0101": ("Live horses, asses, mules and hinnies", "말"),
        "010121": (None, "순종번식용"),
        "847130": ("Portable machines", None),
        "9999": ("Not in the space", None),
    }
    return LabelSpace.from_codes(CODES, "HS2022", names)


def test_from_codes_dedups_and_sorts() -> None:
    space = create_space()

    assert space.subheadings == ("010121", "010129", "847130", "847149")


def test_from_codes_headings_from_subheadings() -> None:
    space = LabelSpace.from_codes(["8471300000", "0101210000"], "HS2022")

    assert space.headings == ("0101", "8471")


def test_from_codes_keeps_edition() -> None:
    assert create_space().edition == "HS2022"


def test_from_codes_keeps_names_of_codes_in_space() -> None:
    space = create_space()

    assert set(space.names) == {"0101", "010121", "847130"}


def test_parent_index_maps_subheadings() -> None:
    space = create_space()

    parents = space.parent_index

    assert parents.dtype == torch.long
    assert parents.shape == (len(space.subheadings),)
    for subheading, parent in zip(space.subheadings, parents.tolist()):
        assert space.headings[parent] == subheading[:4], subheading


def test_subheading_index_of_long_code() -> None:
    space = create_space()

    index = space.subheading_index("8471300000")

    assert space.subheadings[index] == "847130"


def test_heading_index_of_long_code() -> None:
    space = create_space()

    index = space.heading_index("8471300000")

    assert space.headings[index] == "8471"


def test_subheading_index_unknown_is_none() -> None:
    assert create_space().subheading_index("847150") is None


def test_heading_index_unknown_is_none() -> None:
    assert create_space().heading_index("9401") is None


def test_name_prefers_english() -> None:
    space = create_space()

    assert space.name("0101") == "Live horses, asses, mules and hinnies"


def test_name_falls_back_to_korean() -> None:
    assert create_space().name("010121") == "순종번식용"


def test_name_falls_back_to_digits() -> None:
    assert create_space().name("847149") == "847149"


def test_dict_round_trip_equal() -> None:
    space = create_space()

    restored = LabelSpace.from_dict(space.to_dict())

    assert restored == space


def test_dict_round_trip_parent_index() -> None:
    space = create_space()

    restored = LabelSpace.from_dict(space.to_dict())

    assert torch.equal(restored.parent_index, space.parent_index)


def test_dict_round_trip_name_lookup() -> None:
    space = create_space()

    restored = LabelSpace.from_dict(space.to_dict())

    assert restored.name("010121") == "순종번식용"
    assert restored.subheading_index("847149") == space.subheading_index("847149")
