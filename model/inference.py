"""Batched forward passes that return hierarchy-consistent probabilities."""

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

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


@dataclass(frozen=True)
class BatchPlan:
    """Token ids per row and the micro-batches, as lists of row indices, in run order."""

    tokens: list[list[int]]
    batches: list[list[int]]

    @property
    def row_order(self) -> list[int]:
        """Row indices in the order the forward passes read them."""
        return [row for batch in self.batches for row in batch]


def plan_batches(
    model: HSClassifier,
    tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> BatchPlan:
    """Tokenize rows and group them into length-sorted micro-batches under a budget."""
    config = model.config
    # An empty list skips the tokenizer, which raises IndexError on one
    # (transformers 5.25).
    if config.uses_text and texts:
        tokens = tokenize(tokenizer, list(texts), config.max_length)
    else:
        tokens = [[0]] * len(texts)
    return BatchPlan(tokens, budget_batches([len(t) for t in tokens], max_tokens, max_batch))


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
    plan: BatchPlan | None = None,
) -> Probabilities:
    """Score rows in length-sorted micro-batches; rows keep their input order.

    `images` contains one preprocessed tensor [3, H, W] or None per row; it
    is read batch by batch in `plan.row_order`, so a sequence that waits for
    each photo lets the fetching of later photos overlap the forward passes.
    With `text_embeddings`, the same forward pass also returns the text
    embeddings [B, D] that evidence search compares.
    """
    device = next(model.parameters()).device
    config = model.config
    images = images if images is not None else [None] * len(texts)
    if plan is None:
        plan = plan_batches(model, tokenizer, texts, max_tokens=max_tokens,
                            max_batch=max_batch)

    num_headings = len(model.labels.headings)
    subs = torch.empty(len(texts), len(model.labels.subheadings))
    heads = torch.empty(len(texts), num_headings)
    embedded = None
    if text_embeddings and config.uses_text:
        embedded = torch.empty(len(texts), model.text_encoder.embedding_dim)
    for batch in plan.batches:
        inputs = batch_inputs(config, tokenizer, plan.tokens, images, batch, device)
        with autocast_for(device, bf16):
            logits, text = model.logits_and_text_embedding(**inputs)
        probabilities = compute_probabilities(logits, model.parent_index, num_headings)
        subs[batch] = probabilities.subheadings.cpu()
        heads[batch] = probabilities.headings.cpu()
        if embedded is not None:
            embedded[batch] = text.float().cpu()
    return Probabilities(subs, heads, embedded)


def batch_inputs(config, tokenizer, tokens, images, batch, device) -> dict:
    """Collate the token lists and photos of one micro-batch onto the device."""
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
