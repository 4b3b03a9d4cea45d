"""The grouped split on the shipped customs cases."""

import csv

from tests.factories import CASES
from training.data import Example, grouped_split, normalize_description


def _chapter_cases(chapters=("84", "85", "90")) -> list[Example]:
    with CASES.open(encoding="utf-8-sig", newline="") as file:
        rows = [
            (number, row["name"], row["hscode"].zfill(10))
            for number, row in enumerate(csv.DictReader(file), start=1)
        ]
    return [
        Example(number, name, None, code)
        for number, name, code in rows
        if code[:2] in chapters
    ]


def test_split_sizes_on_study_chapters():
    train, test = grouped_split(_chapter_cases(), 0.15, seed=0)
    assert (len(train), len(test)) == (8830, 1563)


def test_split_keeps_descriptions_on_one_side():
    train, test = grouped_split(_chapter_cases(), 0.15, seed=0)
    train_names = {normalize_description(e.description) for e in train}
    test_names = {normalize_description(e.description) for e in test}
    assert not train_names & test_names


def test_split_is_deterministic():
    first = grouped_split(_chapter_cases(), 0.15, seed=0)[1]
    second = grouped_split(_chapter_cases(), 0.15, seed=0)[1]
    assert [e.declaration_id for e in first] == [e.declaration_id for e in second]


def test_normalize_description_collapses_case_and_space():
    assert normalize_description("  Robot\tARM \n  x ") == "robot arm x"
