"""Tokenisation and length-sorted micro-batches for training and inference."""

import random

import torch

DEFAULT_MAX_TOKENS = 8192
"""Token budget of one inference micro-batch (rows x padded length) on a GPU."""
CPU_MAX_TOKENS = 1024
"""The budget on a CPU, where batches whose activations stay in cache ran
about 1.7 times faster than at 8192 (docs/benchmarks.md)."""
DEFAULT_MAX_BATCH = 256
CPU_MAX_PHOTOS = 8
"""Photos per micro-batch on a CPU: ResNet-50 ran fastest at 8 (docs/benchmarks.md)."""


def micro_batch_limits(device: torch.device) -> tuple[int, int]:
    """Return the default token budget and photo cap of a micro-batch on a device."""
    if device.type == "cpu":
        return CPU_MAX_TOKENS, CPU_MAX_PHOTOS
    return DEFAULT_MAX_TOKENS, DEFAULT_MAX_BATCH


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Return token ids per text, truncated to `max_length`, without padding."""
    encoded = tokenizer(
        texts, truncation=True, max_length=max_length, add_special_tokens=True
    )
    return encoded["input_ids"]


def collate_tokens(
    token_lists: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists to the longest: input ids and attention mask, [B, T]."""
    width = max(len(tokens) for tokens in token_lists)
    input_ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention_mask[row, : len(tokens)] = 1
    return input_ids, attention_mask


def budget_batches(
    lengths: list[int],
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH,
    has_photo: list[bool] | None = None,
    max_photos: int | None = None,
) -> list[list[int]]:
    """Group row indices by length so each batch pads little and fits the budget.

    With `has_photo` and `max_photos`, a batch also contains at most `max_photos`
    rows with a photo.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    photo_cap = max_photos if has_photo is not None and max_photos else None
    batches, current, width, photos = [], [], 0, 0
    for index in order:
        new_width = max(width, lengths[index])
        photo = photo_cap is not None and has_photo[index]
        if current and (
            new_width * (len(current) + 1) > max_tokens
            or len(current) >= max_batch
            or (photo and photos >= photo_cap)
        ):
            batches.append(current)
            current, new_width, photos = [], lengths[index], 0
        current.append(index)
        width = new_width
        photos += photo
    if current:
        batches.append(current)
    return batches


def shuffled_length_batches(
    lengths: list[int], batch_size: int, rng: random.Random, pool: int = 50
) -> list[list[int]]:
    """Training batches of similar lengths, in random order.

    Rows are shuffled, sorted by length within pools of `pool` batches, cut
    into batches, and the batches shuffled, so padding stays small while
    every epoch sees a different order.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    step = batch_size * pool
    for start in range(0, len(order), step):
        chunk = sorted(order[start : start + step], key=lengths.__getitem__)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
