"""Tests for saving and loading checkpoints, and for choosing the torch device."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import (
    CONFIG_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    create_model,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from model.device import resolve_device
from model.fusion import HSClassifier, ModelConfig
from model.images import ImageEncoder
from model.labels import LabelSpace
from model.text import create_text_encoder_from_config, load_tokenizer

TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 30522,
}
LABELS = LabelSpace.from_codes(
    ["0101210000", "0101290000", "8471300000", "9403600000"],
    "HS2022",
    {"8471": ("Automatic data-processing machines", "자동자료처리기계")},
)
IMAGE_SIZE = 32
TEXTS = ["노트북 컴퓨터 portable computer", "horse", "oak desk with drawers"]


def build_model(fusion: str, image_weight: float | None = None) -> HSClassifier:
    """Build an untrained model whose config stores the text config as training does."""
    torch.manual_seed(0)
    config = ModelConfig(
        fusion=fusion,
        text_model="minilm",
        text_config=None,
        image_size=IMAGE_SIZE,
        fusion_dim=16,
        image_weight=image_weight,
        labels=LABELS.to_dict(),
        training={"epochs": 1},
    )
    text = None
    if config.uses_text:
        text = create_text_encoder_from_config(TINY_BERT)
        config.text_config = text.backbone.config.to_dict()
    image = ImageEncoder(warn=False) if config.uses_image else None
    return HSClassifier(config, text, image).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def model_inputs(tokenizer, has_image: list[bool]) -> dict:
    """Return the forward arguments for TEXTS with photos where has_image is true."""
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(1)
    photos = torch.randn(sum(has_image), 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "images": photos if any(has_image) else None,
        "has_image": torch.tensor(has_image),
    }


def logits_of(model: HSClassifier, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory, tokenizer) -> tuple[HSClassifier, Path]:
    """Return a text model and the folder it was saved to."""
    model = build_model("text")
    folder = tmp_path_factory.mktemp("text")
    save_checkpoint(model, tokenizer, folder)
    return model, folder


@pytest.fixture(scope="module")
def weighted_checkpoint(tmp_path_factory, tokenizer) -> tuple[HSClassifier, Path]:
    """Return a weighted model with a trained-looking `w` and its folder."""
    model = build_model("weighted")
    with torch.no_grad():
        model.image_weight.fill_(0.7)
        model.missing_image.normal_()
    folder = tmp_path_factory.mktemp("weighted")
    save_checkpoint(model, tokenizer, folder)
    return model, folder


@pytest.fixture(scope="module")
def text_loaded(text_checkpoint) -> tuple[HSClassifier, object]:
    """Return the text model and tokenizer loaded from text_checkpoint's folder."""
    return load_checkpoint(text_checkpoint[1])


@pytest.fixture(scope="module")
def weighted_loaded(weighted_checkpoint) -> HSClassifier:
    """Return the model loaded from weighted_checkpoint's folder."""
    model, _ = load_checkpoint(weighted_checkpoint[1])
    return model


def test_save_returns_written_files(tmp_path, tokenizer) -> None:
    model = build_model("text")

    files = save_checkpoint(model, tokenizer, tmp_path / "checkpoint")

    names = {path.relative_to(tmp_path / "checkpoint").as_posix() for path in files}
    assert WEIGHTS_FILE in names
    assert CONFIG_FILE in names
    assert f"{TOKENIZER_DIR}/tokenizer_config.json" in names


def test_config_json_fusion(text_checkpoint) -> None:
    _, folder = text_checkpoint

    data = json.loads((folder / CONFIG_FILE).read_text())

    assert data["fusion"] == "text"


def test_config_json_labels(text_checkpoint) -> None:
    _, folder = text_checkpoint

    data = json.loads((folder / CONFIG_FILE).read_text())

    assert LabelSpace.from_dict(data["labels"]) == LABELS


def test_config_json_korean_unescaped(text_checkpoint) -> None:
    _, folder = text_checkpoint

    assert "자동자료처리기계" in (folder / CONFIG_FILE).read_text(encoding="utf-8")


def test_config_json_text_config(text_checkpoint) -> None:
    _, folder = text_checkpoint

    data = json.loads((folder / CONFIG_FILE).read_text())

    assert data["text_config"]["model_type"] == "bert"
    assert data["text_config"]["hidden_size"] == TINY_BERT["hidden_size"]


def test_read_config_round_trip(text_checkpoint) -> None:
    model, folder = text_checkpoint

    # JSON turns the integer keys of the text config's id2label into strings.
    expected = json.loads(json.dumps(model.config.to_dict()))
    assert read_config(folder).to_dict() == expected


def test_weights_exclude_parent_index(text_checkpoint) -> None:
    _, folder = text_checkpoint

    assert "parent_index" not in load_file(folder / WEIGHTS_FILE)


def test_load_text_same_logits(text_checkpoint, text_loaded, tokenizer) -> None:
    model, _ = text_checkpoint
    loaded, _ = text_loaded
    inputs = model_inputs(tokenizer, [False, False, False])

    assert torch.equal(logits_of(loaded, inputs), logits_of(model, inputs))


def test_load_returns_eval_mode(text_loaded) -> None:
    loaded, _ = text_loaded

    assert not loaded.training


def test_load_rebuilds_parent_index(text_loaded) -> None:
    loaded, _ = text_loaded

    assert torch.equal(loaded.parent_index, LABELS.parent_index)


def test_load_restores_labels(text_loaded) -> None:
    loaded, _ = text_loaded

    assert loaded.labels == LABELS


def test_load_restores_tokenizer(text_loaded, tokenizer) -> None:
    _, restored = text_loaded

    assert restored(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]


def test_load_tokenizer_from_folder(tmp_path, tokenizer) -> None:
    # Renaming a word in the saved vocabulary shows the folder's copy is used.
    folder = tmp_path / "checkpoint"
    save_checkpoint(build_model("text"), tokenizer, folder)
    path = folder / TOKENIZER_DIR / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab["horsx"] = vocab.pop("horse")
    path.write_text(json.dumps(data), encoding="utf-8")

    _, restored = load_checkpoint(folder)

    assert restored.tokenize("horsx") == ["horsx"]
    assert restored.tokenize("horse") != ["horse"]


def test_load_weighted_same_logits(
    weighted_checkpoint, weighted_loaded, tokenizer
) -> None:
    model, _ = weighted_checkpoint
    inputs = model_inputs(tokenizer, [True, False, True])

    assert torch.equal(logits_of(weighted_loaded, inputs), logits_of(model, inputs))


def test_load_weighted_no_photos_same_logits(
    weighted_checkpoint, weighted_loaded, tokenizer
) -> None:
    model, _ = weighted_checkpoint
    inputs = model_inputs(tokenizer, [False, False, False])

    assert torch.equal(logits_of(weighted_loaded, inputs), logits_of(model, inputs))


def test_load_weighted_learned_weight(weighted_loaded) -> None:
    assert weighted_loaded.image_weight.item() == pytest.approx(0.7)


def test_load_weighted_placeholder(weighted_checkpoint, weighted_loaded) -> None:
    model, _ = weighted_checkpoint

    assert torch.equal(weighted_loaded.missing_image, model.missing_image)


def test_load_weighted_fixed_weight(tmp_path, tokenizer) -> None:
    model = build_model("weighted", image_weight=0.5)
    save_checkpoint(model, tokenizer, tmp_path)

    loaded, _ = load_checkpoint(tmp_path)

    assert loaded.image_weight.item() == 0.5
    assert "image_weight" not in dict(loaded.named_parameters())


def test_image_checkpoint_has_no_tokenizer(tmp_path) -> None:
    model = build_model("image")
    save_checkpoint(model, None, tmp_path)

    loaded, restored = load_checkpoint(tmp_path)

    assert restored is None
    assert not (tmp_path / TOKENIZER_DIR).exists()
    assert loaded.text_encoder is None


def test_create_model_matches_architecture(text_checkpoint) -> None:
    model, _ = text_checkpoint

    rebuilt = create_model(model.config)

    expected = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == expected


def test_resolve_device_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_auto() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_resolve_device_cuda_without_gpu() -> None:
    with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
