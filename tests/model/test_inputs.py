"""Tests for tokenisation, padding and the length-sorted micro-batches."""

import random

import pytest
import torch

from model.inputs import (
    CPU_MAX_PHOTOS,
    CPU_MAX_TOKENS,
    budget_batches,
    collate_tokens,
    micro_batch_limits,
    shuffled_length_batches,
    tokenize,
)
from model.text import load_tokenizer

PAD = 0


def random_lengths(count: int, seed: int, low: int = 3, high: int = 64) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(count)]


def flatten(batches: list[list[int]]) -> list[int]:
    return [index for batch in batches for index in batch]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def test_tokenize_adds_special_tokens(tokenizer) -> None:
    [ids] = tokenize(tokenizer, ["plastic container"], max_length=64)

    assert ids[0] == tokenizer.cls_token_id
    assert ids[-1] == tokenizer.sep_token_id


def test_tokenize_truncates_to_max_length(tokenizer) -> None:
    [ids] = tokenize(tokenizer, ["steel bolt " * 50], max_length=16)

    assert len(ids) == 16
    assert ids[-1] == tokenizer.sep_token_id


def test_tokenize_does_not_pad(tokenizer) -> None:
    short, long = tokenize(tokenizer, ["bolt", "steel bolt with nut"], max_length=64)

    assert len(short) < len(long)
    assert tokenizer.pad_token_id not in short


def test_collate_pads_to_longest() -> None:
    input_ids, _ = collate_tokens([[5, 6, 7], [8], [9, 10]], PAD)

    expected = torch.tensor([[5, 6, 7], [8, PAD, PAD], [9, 10, PAD]])
    assert torch.equal(input_ids, expected)


def test_collate_masks_padding() -> None:
    _, attention_mask = collate_tokens([[5, 6, 7], [8], [9, 10]], PAD)

    expected = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    assert torch.equal(attention_mask, expected)


def test_collate_uses_pad_id() -> None:
    input_ids, _ = collate_tokens([[5, 6], [8]], pad_id=99)

    assert input_ids[1, 1].item() == 99


def test_collate_dtypes() -> None:
    input_ids, attention_mask = collate_tokens([[5, 6], [8]], PAD)

    assert input_ids.dtype == torch.long
    assert attention_mask.dtype == torch.long


def test_budget_covers_every_index_once() -> None:
    lengths = random_lengths(500, seed=1)

    batches = budget_batches(lengths, max_tokens=256, max_batch=16)

    assert sorted(flatten(batches)) == list(range(500))


def test_budget_respects_max_tokens() -> None:
    lengths = random_lengths(500, seed=2)

    batches = budget_batches(lengths, max_tokens=256, max_batch=64)

    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert width * len(batch) <= 256, batch


def test_budget_respects_max_batch() -> None:
    lengths = random_lengths(500, seed=3, high=8)

    batches = budget_batches(lengths, max_tokens=100_000, max_batch=16)

    assert max(len(batch) for batch in batches) == 16


def test_budget_groups_similar_lengths() -> None:
    lengths = random_lengths(500, seed=4)

    batches = budget_batches(lengths, max_tokens=256, max_batch=16)

    # Batches follow the sorted lengths, so no two batches' lengths interleave.
    for before, after in zip(batches, batches[1:]):
        assert max(lengths[i] for i in before) <= min(lengths[i] for i in after)


def test_budget_fills_the_budget() -> None:
    batches = budget_batches([8] * 10, max_tokens=40, max_batch=100)

    assert [len(batch) for batch in batches] == [5, 5]


def test_budget_longer_row_starts_new_batch() -> None:
    # Three rows of 10 fit in 30 tokens, but adding the 20-token row needs 80.
    batches = budget_batches([10, 20, 10, 10], max_tokens=30, max_batch=100)

    assert batches == [[0, 2, 3], [1]]


def test_budget_oversized_row_alone() -> None:
    batches = budget_batches([5, 500, 5], max_tokens=64, max_batch=8)

    assert batches == [[0, 2], [1]]


def test_budget_empty() -> None:
    assert budget_batches([], max_tokens=64, max_batch=8) == []


def test_shuffled_covers_every_index_once() -> None:
    lengths = random_lengths(500, seed=5)

    batches = shuffled_length_batches(lengths, 16, random.Random(0), pool=4)

    assert sorted(flatten(batches)) == list(range(500))


def test_shuffled_respects_batch_size() -> None:
    lengths = random_lengths(500, seed=6)

    batches = shuffled_length_batches(lengths, 16, random.Random(0), pool=4)

    assert max(len(batch) for batch in batches) == 16


def test_shuffled_batches_sorted_by_length() -> None:
    lengths = random_lengths(500, seed=7)

    batches = shuffled_length_batches(lengths, 16, random.Random(0), pool=4)

    for batch in batches:
        batch_lengths = [lengths[i] for i in batch]
        assert batch_lengths == sorted(batch_lengths), batch


def test_shuffled_pads_less_than_random_batches() -> None:
    lengths = random_lengths(800, seed=8)
    rng = random.Random(0)

    batches = shuffled_length_batches(lengths, 16, rng, pool=10)

    order = list(range(800))
    rng.shuffle(order)
    unsorted = [order[i : i + 16] for i in range(0, 800, 16)]
    assert padding(batches, lengths) < padding(unsorted, lengths) / 4


def padding(batches: list[list[int]], lengths: list[int]) -> int:
    """Return the number of pad tokens that batches need."""
    return sum(
        max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b)
        for b in batches
    )


def test_shuffled_same_seed_same_batches() -> None:
    lengths = random_lengths(500, seed=9)

    first = shuffled_length_batches(lengths, 16, random.Random(42), pool=4)
    second = shuffled_length_batches(lengths, 16, random.Random(42), pool=4)

    assert first == second


def test_shuffled_other_seed_other_batches() -> None:
    lengths = random_lengths(500, seed=10)

    first = shuffled_length_batches(lengths, 16, random.Random(42), pool=4)
    second = shuffled_length_batches(lengths, 16, random.Random(43), pool=4)

    assert first != second


def test_shuffled_epochs_differ() -> None:
    lengths = random_lengths(500, seed=11)
    rng = random.Random(42)

    first = shuffled_length_batches(lengths, 16, rng, pool=4)
    second = shuffled_length_batches(lengths, 16, rng, pool=4)

    assert first != second


def test_budget_caps_photos_per_batch() -> None:
    batches = budget_batches([5] * 6, max_tokens=1000, max_batch=100,
                             has_photo=[True] * 6, max_photos=2)

    assert [len(b) for b in batches] == [2, 2, 2]


def test_budget_photo_cap_ignores_rows_without_photo() -> None:
    batches = budget_batches([5] * 6, max_tokens=1000, max_batch=100,
                             has_photo=[True, False, False, False, False, True],
                             max_photos=2)

    assert len(batches) == 1


def test_micro_batch_limits_cpu() -> None:
    assert micro_batch_limits(torch.device("cpu")) == (CPU_MAX_TOKENS, CPU_MAX_PHOTOS)
