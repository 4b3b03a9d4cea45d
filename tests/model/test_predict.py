"""Tests for hierarchy-consistent probabilities, decoding and batched inference."""

import math
from contextlib import nullcontext

import pytest
import torch

from model import inference
from model.fusion import HSClassifier, ModelConfig
from model.images import ImageEncoder
from model.inference import autocast_for, predict_probabilities, stack_images
from model.labels import LabelSpace
from model.predict import Probabilities, compute_probabilities, decode_predictions
from model.text import create_text_encoder_from_config, load_tokenizer

TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 30522,
}
IMAGE_SIZE = 32

THREE = LabelSpace.from_codes(["0101210000", "0101290000", "0201100000"], "HS2022")
"""Heading 0101 with two subheadings and heading 0201 with one."""

SEVEN = LabelSpace.from_codes(
    [
        "0101210000",
        "0101290000",
        "8471300000",
        "8471490000",
        "8471500000",
        "9403600000",
        "9403700000",
    ],
    "HS2022",
)
"""Headings 0101, 8471 and 9403 with two, three and two subheadings."""

TEXTS = [
    "plastic storage container with lid",
    "노트북 컴퓨터",
    "wooden office desk, oak veneer, with three drawers and a steel frame",
    "horse",
    "portable computer 휴대용 컴퓨터 14 inch display, 16 GB memory, 512 GB disk",
]
"""Goods names of different lengths, so sorting by length reorders them."""


def probabilities_of(probs: list[float], labels: LabelSpace) -> Probabilities:
    """Return the probabilities whose softmax gives `probs` for one row."""
    logits = torch.tensor([probs]).log()
    return compute_probabilities(logits, labels.parent_index, len(labels.headings))


def create_model(fusion: str) -> HSClassifier:
    """Return a small eval-mode model over SEVEN with random weights."""
    torch.manual_seed(0)
    config = ModelConfig(
        fusion=fusion,
        text_model=None,
        text_config=TINY_BERT,
        image_size=IMAGE_SIZE,
        fusion_dim=16,
        labels=SEVEN.to_dict(),
    )
    text = create_text_encoder_from_config(TINY_BERT) if config.uses_text else None
    image = ImageEncoder(warn=False) if config.uses_image else None
    return HSClassifier(config, text, image).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def text_model() -> HSClassifier:
    return create_model("text")


@pytest.fixture(scope="module")
def concat_model() -> HSClassifier:
    return create_model("concat")


def create_photos() -> list[torch.Tensor | None]:
    """Return one photo or None per text in TEXTS."""
    generator = torch.Generator().manual_seed(1)
    photos = torch.randn(len(TEXTS), 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return [photos[0], None, photos[2], None, photos[4]]


def test_heading_probabilities_sum_subheadings() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(4, len(SEVEN.subheadings), generator=generator) * 3

    result = compute_probabilities(logits, SEVEN.parent_index, len(SEVEN.headings))

    subs = result.subheadings
    expected = torch.stack(
        [subs[:, 0:2].sum(-1), subs[:, 2:5].sum(-1), subs[:, 5:7].sum(-1)], dim=-1
    )
    assert torch.allclose(result.headings, expected)


def test_heading_probabilities_sum_to_one() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, len(SEVEN.subheadings), generator=generator) * 3

    result = compute_probabilities(logits, SEVEN.parent_index, len(SEVEN.headings))

    assert torch.allclose(result.headings.sum(-1), torch.ones(4))


def test_subheading_probabilities_sum_to_one() -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(4, len(SEVEN.subheadings), generator=generator) * 3

    result = compute_probabilities(logits, SEVEN.parent_index, len(SEVEN.headings))

    assert torch.allclose(result.subheadings.sum(-1), torch.ones(4))


def test_compute_probabilities_bf16_logits_float() -> None:
    logits = torch.zeros(2, len(SEVEN.subheadings), dtype=torch.bfloat16)

    result = compute_probabilities(logits, SEVEN.parent_index, len(SEVEN.headings))

    assert result.subheadings.dtype == torch.float32
    assert result.headings.dtype == torch.float32


def test_decode_prefers_heading_over_best_subheading() -> None:
    # 020110 alone is the most probable subheading, but heading 0101 has 0.6.
    probabilities = probabilities_of([0.3, 0.3, 0.4], THREE)

    [prediction] = decode_predictions(probabilities, THREE)

    assert prediction.heading == "0101"
    assert prediction.subheading in ("010121", "010129")


def test_decode_best_subheading_under_heading() -> None:
    probabilities = probabilities_of([0.25, 0.35, 0.4], THREE)

    [prediction] = decode_predictions(probabilities, THREE)

    assert prediction.subheading == "010129"


def test_decode_heading_probability() -> None:
    probabilities = probabilities_of([0.25, 0.35, 0.4], THREE)

    [prediction] = decode_predictions(probabilities, THREE)

    assert prediction.heading_probability == pytest.approx(0.6)


def test_decode_subheading_probability() -> None:
    probabilities = probabilities_of([0.25, 0.35, 0.4], THREE)

    [prediction] = decode_predictions(probabilities, THREE)

    assert prediction.subheading_probability == pytest.approx(0.35)


def test_decode_top_k_keeps_global_order() -> None:
    probabilities = probabilities_of([0.25, 0.35, 0.4], THREE)

    [prediction] = decode_predictions(probabilities, THREE)

    codes = [entry["subheading"] for entry in prediction.top_k]
    assert codes == ["020110", "010129", "010121"]


def test_decode_top_k_probabilities() -> None:
    probabilities = probabilities_of([0.25, 0.35, 0.4], THREE)

    [prediction] = decode_predictions(probabilities, THREE)

    values = [entry["probability"] for entry in prediction.top_k]
    assert values == pytest.approx([0.4, 0.35, 0.25])


def test_decode_top_k_length_capped_by_labels() -> None:
    probabilities = probabilities_of([0.25, 0.35, 0.4], THREE)

    [prediction] = decode_predictions(probabilities, THREE)

    assert len(prediction.top_k) == 3


def test_decode_top_k_length_default_five() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(3, len(SEVEN.subheadings), generator=generator)
    probabilities = compute_probabilities(
        logits, SEVEN.parent_index, len(SEVEN.headings)
    )

    predictions = decode_predictions(probabilities, SEVEN)

    assert [len(p.top_k) for p in predictions] == [5, 5, 5]


def test_decode_top_k_sorted() -> None:
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(3, len(SEVEN.subheadings), generator=generator) * 2
    probabilities = compute_probabilities(
        logits, SEVEN.parent_index, len(SEVEN.headings)
    )

    predictions = decode_predictions(probabilities, SEVEN)

    for prediction in predictions:
        values = [entry["probability"] for entry in prediction.top_k]
        assert values == sorted(values, reverse=True)


def test_decode_consistent_for_random_rows() -> None:
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(50, len(SEVEN.subheadings), generator=generator) * 3
    probabilities = compute_probabilities(
        logits, SEVEN.parent_index, len(SEVEN.headings)
    )

    predictions = decode_predictions(probabilities, SEVEN)

    for row, prediction in enumerate(predictions):
        heads = probabilities.headings[row]
        assert prediction.subheading[:4] == prediction.heading, row
        assert prediction.heading_probability == pytest.approx(heads.max().item())


def test_decode_k_one() -> None:
    probabilities = probabilities_of([0.25, 0.35, 0.4], THREE)

    [prediction] = decode_predictions(probabilities, THREE, k=1)

    assert len(prediction.top_k) == 1


def test_stack_images_only_present() -> None:
    photos = create_photos()

    inputs = stack_images(photos, torch.device("cpu"))

    assert inputs["images"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert inputs["has_image"].tolist() == [True, False, True, False, True]


def test_stack_images_none_when_no_photo() -> None:
    inputs = stack_images([None, None], torch.device("cpu"))

    assert inputs["images"] is None
    assert inputs["has_image"].tolist() == [False, False]


def predict_one_by_one(model, tokenizer, images=None) -> Probabilities:
    """Return the probabilities of TEXTS with one row per forward pass."""
    images = images or [None] * len(TEXTS)
    rows = [
        predict_probabilities(model, tokenizer, [text], [image], bf16=False)
        for text, image in zip(TEXTS, images)
    ]
    return Probabilities(
        torch.cat([row.subheadings for row in rows]),
        torch.cat([row.headings for row in rows]),
    )


def test_predict_keeps_input_order(text_model, tokenizer) -> None:
    # A small token budget splits TEXTS into several length-sorted batches.
    batched = predict_probabilities(
        text_model, tokenizer, TEXTS, max_tokens=40, max_batch=2, bf16=False
    )

    single = predict_one_by_one(text_model, tokenizer)
    assert torch.allclose(batched.subheadings, single.subheadings, atol=1e-5)
    assert torch.allclose(batched.headings, single.headings, atol=1e-5)


def test_predict_one_batch_keeps_order(text_model, tokenizer) -> None:
    batched = predict_probabilities(text_model, tokenizer, TEXTS, bf16=False)

    single = predict_one_by_one(text_model, tokenizer)
    assert torch.allclose(batched.subheadings, single.subheadings, atol=1e-5)


def test_predict_shapes(text_model, tokenizer) -> None:
    result = predict_probabilities(text_model, tokenizer, TEXTS)

    assert result.subheadings.shape == (len(TEXTS), len(SEVEN.subheadings))
    assert result.headings.shape == (len(TEXTS), len(SEVEN.headings))


def test_predict_headings_sum_to_one(text_model, tokenizer) -> None:
    result = predict_probabilities(text_model, tokenizer, TEXTS)

    assert torch.allclose(result.headings.sum(-1), torch.ones(len(TEXTS)))


def test_predict_images_with_none_keep_order(concat_model, tokenizer) -> None:
    photos = create_photos()

    batched = predict_probabilities(
        concat_model, tokenizer, TEXTS, photos, max_tokens=40, max_batch=2, bf16=False
    )

    single = predict_one_by_one(concat_model, tokenizer, photos)
    assert torch.allclose(batched.subheadings, single.subheadings, atol=1e-5)


def test_predict_photo_changes_row(concat_model, tokenizer) -> None:
    photos = create_photos()

    with_photos = predict_probabilities(concat_model, tokenizer, TEXTS, photos)
    without = predict_probabilities(concat_model, tokenizer, TEXTS)

    assert not torch.allclose(with_photos.subheadings[0], without.subheadings[0])
    assert torch.allclose(with_photos.subheadings[1], without.subheadings[1])


def test_predict_empty_input(text_model, tokenizer) -> None:
    result = predict_probabilities(text_model, tokenizer, [])

    assert result.subheadings.shape == (0, len(SEVEN.subheadings))


def test_predict_then_decode(text_model, tokenizer) -> None:
    probabilities = predict_probabilities(text_model, tokenizer, TEXTS)

    predictions = decode_predictions(probabilities, SEVEN)

    assert len(predictions) == len(TEXTS)
    for prediction in predictions:
        assert prediction.subheading[:4] == prediction.heading
        assert math.isfinite(prediction.subheading_probability)


def test_autocast_for_cpu_off_without_on_cpu() -> None:
    assert isinstance(autocast_for(torch.device("cpu"), True), nullcontext)


def test_autocast_for_cpu_off_without_native_bf16(monkeypatch) -> None:
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)

    assert isinstance(autocast_for(torch.device("cpu"), True, on_cpu=True), nullcontext)


def test_autocast_for_cpu_on_with_native_bf16(monkeypatch) -> None:
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)

    context = autocast_for(torch.device("cpu"), True, on_cpu=True)
    assert isinstance(context, torch.autocast)
