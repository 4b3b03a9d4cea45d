"""Batched forward passes that return hierarchy-consistent probabilities."""

from collections.abc import Sequence
from contextlib import nullcontext

import torch

from model.fusion import HSClassifier
from model.inputs import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_TOKENS,
    budget_batches,
    collate_tokens,
    tokenize,
)
from model.predict import Probabilities, compute_probabilities


def autocast_for(device: torch.device, enabled: bool):
    """Return a bf16 autocast context on CUDA when enabled, else a null context."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.inference_mode()
def predict_probabilities(
    model: HSClassifier,
    tokenizer,
    texts: Sequence[str],
    images: Sequence[torch.Tensor | None] | None = None,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH,
    bf16: bool = True,
    text_embeddings: bool = False,
) -> Probabilities:
    """Score rows in length-sorted micro-batches; rows keep their input order.

    `images` contains one preprocessed tensor [3, H, W] or None per row. With
    `text_embeddings`, the same forward pass also returns the text
    embeddings [B, D] that evidence search compares.
    """
    device = next(model.parameters()).device
    config = model.config
    images = images if images is not None else [None] * len(texts)
    # An empty list skips the tokenizer, which raises IndexError on one
    # (transformers 5.25).
    if config.uses_text and texts:
        tokens = tokenize(tokenizer, list(texts), config.max_length)
    else:
        tokens = [[0]] * len(texts)

    num_headings = len(model.labels.headings)
    subs = torch.empty(len(texts), len(model.labels.subheadings))
    heads = torch.empty(len(texts), num_headings)
    embedded = None
    if text_embeddings and config.uses_text:
        embedded = torch.empty(len(texts), model.text_encoder.embedding_dim)
    for batch in budget_batches([len(t) for t in tokens], max_tokens, max_batch):
        inputs = _batch_inputs(config, tokenizer, tokens, images, batch, device)
        with autocast_for(device, bf16):
            logits, text = model.logits_and_text_embedding(**inputs)
        probabilities = compute_probabilities(logits, model.parent_index, num_headings)
        subs[batch] = probabilities.subheadings.cpu()
        heads[batch] = probabilities.headings.cpu()
        if embedded is not None:
            embedded[batch] = text.float().cpu()
    return Probabilities(subs, heads, embedded)


def _batch_inputs(config, tokenizer, tokens, images, batch, device) -> dict:
    inputs = {}
    non_blocking = device.type == "cuda"
    if config.uses_text:
        input_ids, attention_mask = collate_tokens(
            [tokens[i] for i in batch], tokenizer.pad_token_id
        )
        inputs["input_ids"] = input_ids.to(device, non_blocking=non_blocking)
        inputs["attention_mask"] = attention_mask.to(device, non_blocking=non_blocking)
    if config.uses_image:
        inputs.update(stack_images([images[i] for i in batch], device))
    return inputs


def stack_images(
    images: Sequence[torch.Tensor | None], device: torch.device
) -> dict[str, torch.Tensor | None]:
    """Stack the photos present into [P, 3, H, W] with a mask [B] of who has one."""
    has_image = torch.tensor([image is not None for image in images], dtype=torch.bool)
    present = [image for image in images if image is not None]
    stacked = torch.stack(present).to(device) if present else None
    return {"images": stacked, "has_image": has_image.to(device)}
