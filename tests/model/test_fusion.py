"""Tests for the fused classifier, its hierarchical logits and its loss."""

import pytest
import torch
from torch import nn

from model.fusion import (
    FUSIONS,
    HSClassifier,
    ModelConfig,
    heading_log_probs,
    hierarchical_loss,
)
from model.images import ImageEncoder
from model.labels import LabelSpace
from model.ngrams import collate_ngrams, hash_ngrams
from model.predict import compute_probabilities
from model.text import TextEncoder, create_text_encoder_from_config

TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 30522,
}
LABELS = LabelSpace.from_codes(
    ["0101210000", "0101290000", "8471300000", "8471490000", "8471500000", "940360"],
    "HS2022",
)
"""Headings 0101, 8471 and 9403 with two, three and one subheadings."""
NUM_SUBHEADINGS = len(LABELS.subheadings)
NUM_HEADINGS = len(LABELS.headings)
IMAGE_SIZE = 32
BATCH = 3


def create_config(fusion: str, **overrides) -> ModelConfig:
    """Return a small config without dropout, so eval and train outputs agree."""
    settings = {
        "fusion": fusion,
        "text_model": None,
        "text_config": TINY_BERT,
        "image_size": IMAGE_SIZE,
        "fusion_dim": 16,
        "dropout": 0.0,
        "labels": LABELS.to_dict(),
    }
    settings.update(overrides)
    return ModelConfig(**settings)


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    torch.manual_seed(0)
    return create_text_encoder_from_config(TINY_BERT)


@pytest.fixture(scope="module")
def image_encoder() -> ImageEncoder:
    torch.manual_seed(1)
    return ImageEncoder(warn=False)


@pytest.fixture(scope="module")
def models(text_encoder, image_encoder) -> dict[str, HSClassifier]:
    """Return one eval-mode model per fusion; they share the two encoders."""
    torch.manual_seed(2)
    built = {}
    for fusion in FUSIONS:
        config = create_config(fusion)
        text = text_encoder if config.uses_text else None
        image = image_encoder if config.uses_image else None
        built[fusion] = HSClassifier(config, text, image).eval()
    return built


def create_tokens(rows: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Return random token ids [rows, 6] and a mask whose rows differ in length."""
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(1000, 5000, (rows, 6), generator=generator)
    attention_mask = torch.ones(rows, 6, dtype=torch.long)
    attention_mask[0, 4:] = 0
    input_ids[0, 4:] = 0
    return input_ids, attention_mask


def create_images(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(4)
    return torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def run(model: HSClassifier, images, has_image, rows: int = BATCH) -> torch.Tensor:
    """Return a model's logits for `rows` rows of fixed tokens, without gradients."""
    input_ids, attention_mask = create_tokens(rows)
    with torch.no_grad():
        return model(input_ids, attention_mask, images, has_image)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_mixed_batch_shape(models, fusion) -> None:
    has_image = torch.tensor([True, False, True])

    logits = run(models[fusion], create_images(2), has_image)

    assert logits.shape == (BATCH, NUM_SUBHEADINGS)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_mixed_batch_finite(models, fusion) -> None:
    has_image = torch.tensor([True, False, True])

    logits = run(models[fusion], create_images(2), has_image)

    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_no_photos_shape(models, fusion) -> None:
    has_image = torch.zeros(BATCH, dtype=torch.bool)

    logits = run(models[fusion], None, has_image)

    assert logits.shape == (BATCH, NUM_SUBHEADINGS)


def test_image_fusion_no_photos_rows_equal(models) -> None:
    has_image = torch.zeros(BATCH, dtype=torch.bool)

    logits = run(models["image"], None, has_image)

    # Every row gets the same placeholder, so every row scores the same.
    assert torch.allclose(logits[0], logits[1])
    assert torch.allclose(logits[0], logits[2])


def test_image_fusion_photos_reach_their_rows(models) -> None:
    model = models["image"]
    images = create_images(2)

    mixed = run(model, images, torch.tensor([True, False, True]))
    first = run(model, images[:1], torch.tensor([True]), rows=1)
    second = run(model, images[1:], torch.tensor([True]), rows=1)
    missing = run(model, None, torch.tensor([False]), rows=1)

    assert torch.allclose(mixed[0], first[0], atol=1e-5)
    assert torch.allclose(mixed[1], missing[0], atol=1e-5)
    assert torch.allclose(mixed[2], second[0], atol=1e-5)


def test_image_fusion_photo_changes_logits(models) -> None:
    model = models["image"]

    with_photo = run(model, create_images(1), torch.tensor([True]), rows=1)
    without = run(model, None, torch.tensor([False]), rows=1)

    assert not torch.allclose(with_photo, without)


def test_text_fusion_ignores_photos(models) -> None:
    model = models["text"]

    with_photos = run(model, create_images(BATCH), torch.ones(BATCH, dtype=bool))
    without = run(model, None, torch.zeros(BATCH, dtype=torch.bool))

    assert torch.equal(with_photos, without)


def test_text_fusion_has_no_placeholder(models) -> None:
    assert not hasattr(models["text"], "missing_image")


@pytest.mark.parametrize("fusion", ["image", "concat", "weighted"])
def test_placeholder_is_parameter(models, fusion) -> None:
    model = models[fusion]

    assert isinstance(model.missing_image, nn.Parameter)
    assert model.missing_image.shape == (ImageEncoder.embedding_dim,)


def test_placeholder_gets_gradient(text_encoder, image_encoder) -> None:
    torch.manual_seed(5)
    model = HSClassifier(create_config("concat"), text_encoder, image_encoder)
    input_ids, attention_mask = create_tokens()

    logits = model(input_ids, attention_mask, None, torch.zeros(BATCH, dtype=bool))
    logits.sum().backward()

    assert model.missing_image.grad is not None
    assert model.missing_image.grad.abs().sum() > 0


def test_weighted_learned_weight_is_parameter(models) -> None:
    model = models["weighted"]

    assert isinstance(model.image_weight, nn.Parameter)
    assert "image_weight" in dict(model.named_parameters())


def test_weighted_learned_weight_starts_at_one(models) -> None:
    assert models["weighted"].image_weight.item() == 1.0


def test_weighted_fixed_weight_is_buffer(text_encoder, image_encoder) -> None:
    config = create_config("weighted", image_weight=0.5)

    model = HSClassifier(config, text_encoder, image_encoder)

    assert not isinstance(model.image_weight, nn.Parameter)
    assert "image_weight" not in dict(model.named_parameters())
    assert "image_weight" in dict(model.named_buffers())


def test_weighted_fixed_weight_value(text_encoder, image_encoder) -> None:
    config = create_config("weighted", image_weight=0.5)

    model = HSClassifier(config, text_encoder, image_encoder)

    assert model.image_weight.item() == 0.5


def test_weighted_fixed_weight_in_state_dict(text_encoder, image_encoder) -> None:
    config = create_config("weighted", image_weight=0.5)

    model = HSClassifier(config, text_encoder, image_encoder)

    assert "image_weight" in model.state_dict()


def test_config_invalid_fusion_raises() -> None:
    with pytest.raises(ValueError, match="sum"):
        create_config("sum")


def test_config_text_fusion_uses() -> None:
    config = create_config("text")

    assert config.uses_text
    assert not config.uses_image


def test_config_image_fusion_uses() -> None:
    config = create_config("image")

    assert not config.uses_text
    assert config.uses_image


def test_parent_index_not_in_state_dict(models) -> None:
    assert "parent_index" not in models["text"].state_dict()


def test_logits_add_parent_heading_logit(text_encoder) -> None:
    model = HSClassifier(create_config("text"), text_encoder, None).eval()
    with torch.no_grad():
        model.heading_head.weight.zero_()
        model.heading_head.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
        model.subheading_head.weight.zero_()
        model.subheading_head.bias.copy_(torch.arange(NUM_SUBHEADINGS) * 10.0)

    logits = run(model, None, None)

    # Subheadings 010121 010129 | 847130 847149 847150 | 940360.
    expected = torch.tensor([1.0, 11.0, 22.0, 32.0, 42.0, 53.0])
    assert torch.equal(logits[0], expected)


def test_heading_log_probs_match_summed_softmax() -> None:
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(4, NUM_SUBHEADINGS, generator=generator) * 3

    log_probs = torch.log_softmax(logits, dim=-1)
    result = heading_log_probs(log_probs, LABELS.parent_index, NUM_HEADINGS)

    summed = compute_probabilities(logits, LABELS.parent_index, NUM_HEADINGS)
    assert torch.allclose(result, summed.headings.log(), atol=1e-5)


def test_heading_log_probs_unlikely_heading_exact() -> None:
    # Heading 9403 lies 100 nats below the others, beyond float32 probabilities.
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, -100.0]])
    log_probs = torch.log_softmax(logits, dim=-1)

    result = heading_log_probs(log_probs, LABELS.parent_index, NUM_HEADINGS)

    assert torch.allclose(result[0, 2], log_probs[0, 5])


def test_heading_log_probs_unlikely_heading_gradient() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, -100.0]], requires_grad=True)
    log_probs = torch.log_softmax(logits, dim=-1)

    result = heading_log_probs(log_probs, LABELS.parent_index, NUM_HEADINGS)
    result[0, 2].backward()

    # d log p(9403) / d logit(940360) = 1 - p(940360), which is 1 here.
    assert torch.allclose(logits.grad[0, 5], torch.tensor(1.0))


def test_loss_is_sum_of_both_cross_entropies() -> None:
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2, NUM_SUBHEADINGS, generator=generator)
    subheading_target = torch.tensor([1, 5])
    heading_target = LABELS.parent_index[subheading_target]

    loss = hierarchical_loss(
        logits, subheading_target, heading_target, LABELS.parent_index, NUM_HEADINGS
    )

    probabilities = compute_probabilities(logits, LABELS.parent_index, NUM_HEADINGS)
    heading_nll = -probabilities.headings.log()[[0, 1], heading_target].mean()
    subheading_nll = torch.nn.functional.cross_entropy(logits, subheading_target)
    assert torch.allclose(loss, subheading_nll + heading_nll, atol=1e-5)


def test_loss_finite_for_model_logits(models) -> None:
    logits = run(models["concat"], create_images(1), torch.tensor([0, 1, 0]) > 0)
    subheading_target = torch.tensor([0, 2, 5])

    loss = hierarchical_loss(
        logits,
        subheading_target,
        LABELS.parent_index[subheading_target],
        LABELS.parent_index,
        NUM_HEADINGS,
        label_smoothing=0.1,
    )

    assert loss.ndim == 0
    assert torch.isfinite(loss)


def test_loss_decreases_when_training() -> None:
    torch.manual_seed(8)
    text = create_text_encoder_from_config(TINY_BERT)
    model = HSClassifier(create_config("text"), text, None).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    input_ids, attention_mask = create_tokens()
    subheading_target = torch.tensor([0, 3, 5])
    heading_target = LABELS.parent_index[subheading_target]

    losses = []
    for _ in range(8):
        logits = model(input_ids, attention_mask)
        loss = hierarchical_loss(
            logits, subheading_target, heading_target, model.parent_index, NUM_HEADINGS
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < losses[0] * 0.5


NGRAM_BUCKETS = 64


def _ngram_model(text_encoder, evidence_ngrams: bool) -> HSClassifier:
    config = create_config("text", ngram_buckets=NGRAM_BUCKETS, ngram_dim=8,
                           evidence_ngrams=evidence_ngrams)
    return HSClassifier(config, text_encoder, None).eval()


def _ngram_batch(rows: int = BATCH) -> dict:
    ids, offsets, weights = collate_ngrams(
        [hash_ngrams(f"goods {row}", NGRAM_BUCKETS) for row in range(rows)]
    )
    return {"ngram_ids": ids, "ngram_offsets": offsets, "ngram_weights": weights}


def test_ngram_view_changes_the_logits(text_encoder):
    model = _ngram_model(text_encoder, evidence_ngrams=False)
    input_ids, attention_mask = create_tokens()
    with_ngrams = model(input_ids, attention_mask, **_ngram_batch())
    model.config.ngram_buckets = 0
    without = model(input_ids, attention_mask)
    assert not torch.allclose(with_ngrams, without)


def test_evidence_embedding_joins_text_and_ngrams(text_encoder):
    model = _ngram_model(text_encoder, evidence_ngrams=True)
    _, evidence = model.logits_and_text_embedding(*create_tokens(), **_ngram_batch())
    assert evidence.shape == (BATCH, model.evidence_dim)


def test_evidence_embedding_has_unit_length(text_encoder):
    model = _ngram_model(text_encoder, evidence_ngrams=True)
    evidence = model.embed_text(*create_tokens(), **_ngram_batch())
    assert torch.allclose(evidence.norm(dim=-1), torch.ones(BATCH), atol=1e-5)


def test_evidence_embedding_without_evidence_ngrams_is_the_text(text_encoder):
    model = _ngram_model(text_encoder, evidence_ngrams=False)
    input_ids, attention_mask = create_tokens()
    evidence = model.embed_text(input_ids, attention_mask, **_ngram_batch())
    assert torch.equal(evidence, text_encoder(input_ids, attention_mask))
