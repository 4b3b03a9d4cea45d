"""Batched forward passes that return hierarchy-consistent probabilities."""

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from model.device import cpu_has_native_bf16
from model.fusion import HSClassifier, ModelConfig
from model.inputs import (
    DEFAULT_MAX_BATCH,
    budget_batches,
    collate_tokens,
    micro_batch_limits,
    tokenize,
)
from model.ngrams import collate_ngrams, hash_ngrams
from model.predict import Probabilities, compute_probabilities


def autocast_for(device: torch.device, enabled: bool, *, on_cpu: bool = False):
    """Return a bf16 autocast context when enabled, else a null context.

    bf16 applies on CUDA, and with `on_cpu` also on a CPU with native bf16
    arithmetic. Other CPUs would emulate it and run slower than float32.
    """
    if not enabled:
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if on_cpu and device.type == "cpu" and cpu_has_native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


@dataclass(frozen=True)
class BatchPlan:
    """Token ids and n-gram buckets per row and the micro-batches, in run order.

    A micro-batch is a list of row indices; `ngrams` is None for a model
    without the n-gram view.
    """

    tokens: list[list[int]]
    batches: list[list[int]]
    ngrams: list[list[int]] | None = None

    @property
    def row_order(self) -> list[int]:
        """Row indices in the order the forward passes read them."""
        return [row for batch in self.batches for row in batch]


def plan_batches(
    model: HSClassifier,
    tokenizer,
    texts: Sequence[str],
    has_photo: Sequence[bool] | None = None,
    *,
    max_tokens: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_photos: int | None = None,
) -> BatchPlan:
    """Tokenize rows and group them into length-sorted micro-batches under a budget.

    A limit left None takes the model's device default (`micro_batch_limits`).
    """
    config = model.config
    default_tokens, default_photos = micro_batch_limits(next(model.parameters()).device)
    max_tokens = max_tokens or default_tokens
    max_photos = max_photos or default_photos
    if not config.uses_image:
        has_photo = None
    # An empty list skips the tokenizer, which raises IndexError on one
    # (transformers 5.25).
    if config.uses_text and texts:
        tokens = tokenize(tokenizer, list(texts), config.max_length)
    else:
        tokens = [[0]] * len(texts)
    lengths = [len(t) for t in tokens]
    has_photo = list(has_photo) if has_photo is not None else None
    return BatchPlan(
        tokens,
        budget_batches(lengths, max_tokens, max_batch, has_photo, max_photos),
        text_ngrams(config, texts),
    )


def text_ngrams(config: ModelConfig, texts: Sequence[str]) -> list[list[int]] | None:
    """Return the hashed n-grams of each text, or None for a model without them."""
    if not config.uses_ngrams:
        return None
    return [hash_ngrams(text, config.ngram_buckets) for text in texts]


@torch.inference_mode()
def predict_probabilities(
    model: HSClassifier,
    tokenizer,
    texts: Sequence[str],
    images: Sequence[torch.Tensor | None] | None = None,
    *,
    max_tokens: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_photos: int | None = None,
    bf16: bool = True,
    bf16_cpu: bool = False,
    text_embeddings: bool = False,
    plan: BatchPlan | None = None,
) -> Probabilities:
    """Score rows in length-sorted micro-batches; rows keep their input order.

    `images` contains one preprocessed tensor [3, H, W] or None per row; it
    is read batch by batch in `plan.row_order`, so a sequence that waits for
    each photo lets the fetching of later photos overlap the forward passes.
    `bf16` turns on bf16 autocast on CUDA, `bf16_cpu` on a CPU with native
    bf16 as well. With `text_embeddings`, the same forward pass also returns
    the text embeddings [B, D] that evidence search compares.
    """
    device = next(model.parameters()).device
    config = model.config
    images = images if images is not None else [None] * len(texts)
    if plan is None:
        plan = plan_batches(model, tokenizer, texts,
                            [image is not None for image in images],
                            max_tokens=max_tokens, max_batch=max_batch,
                            max_photos=max_photos)

    num_headings = len(model.labels.headings)
    subs = torch.empty(len(texts), len(model.labels.subheadings))
    heads = torch.empty(len(texts), num_headings)
    embedded = None
    if text_embeddings and config.uses_text:
        embedded = torch.empty(len(texts), model.evidence_dim)
    for batch in plan.batches:
        inputs = batch_inputs(config, tokenizer, plan.tokens, images, batch, device,
                              plan.ngrams)
        with autocast_for(device, bf16, on_cpu=bf16_cpu):
            logits, text = model.logits_and_text_embedding(**inputs)
        probabilities = compute_probabilities(
            logits, model.parent_index, num_headings, config.temperature,
            config.confidence_map,
        )
        subs[batch] = probabilities.subheadings.cpu()
        heads[batch] = probabilities.headings.cpu()
        if embedded is not None:
            embedded[batch] = text.float().cpu()
    return Probabilities(subs, heads, embedded)


def batch_inputs(config, tokenizer, tokens, images, batch, device, ngrams=None) -> dict:
    """Collate the tokens, photos and n-grams of one micro-batch onto the device."""
    inputs = {}
    if ngrams is not None:
        inputs.update(ngram_inputs([ngrams[i] for i in batch], device))
    if config.uses_text:
        input_ids, attention_mask = collate_tokens(
            [tokens[i] for i in batch], tokenizer.pad_token_id
        )
        inputs["input_ids"] = to_device(input_ids, device)
        inputs["attention_mask"] = to_device(attention_mask, device)
    if config.uses_image:
        inputs.update(stack_images([images[i] for i in batch], device))
    return inputs


def ngram_inputs(ngram_lists: Sequence[list[int]], device: torch.device) -> dict:
    """Return the model's n-gram keyword inputs for some rows, on the device."""
    ids, offsets, weights = collate_ngrams(ngram_lists)
    return {
        "ngram_ids": to_device(ids, device),
        "ngram_offsets": to_device(offsets, device),
        "ngram_weights": to_device(weights, device),
    }


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to the device; to CUDA from pinned memory, asynchronously."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def stack_images(
    images: Sequence[torch.Tensor | None], device: torch.device
) -> dict[str, torch.Tensor | None]:
    """Stack the photos present into [P, 3, H, W] with a mask [B] of who has one."""
    has_image = torch.tensor([image is not None for image in images], dtype=torch.bool)
    present = [image for image in images if image is not None]
    stacked = to_device(torch.stack(present), device) if present else None
    return {"images": stacked, "has_image": to_device(has_image, device)}
