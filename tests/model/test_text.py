"""Tests for the packaged MiniLM text model, its tokenizer and mean pooling."""

import importlib.util
import shutil
import unicodedata
from pathlib import Path

import pytest
import torch

from model.inputs import collate_tokens, tokenize
from model.text import (
    MINILM_PACKAGE,
    MINILM_SHA256,
    TextEncoder,
    TextModelError,
    _check_sha256,
    create_text_encoder,
    create_text_encoder_from_config,
    load_tokenizer,
    resolve_text_model,
)

TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 30522,
}


def packaged_folder() -> Path:
    """Return the `model` folder inside the installed MiniLM package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return create_text_encoder("minilm").eval()


@pytest.fixture(scope="module")
def tiny_encoder() -> TextEncoder:
    torch.manual_seed(0)
    return create_text_encoder_from_config(TINY_BERT).eval()


def encode(encoder: TextEncoder, tokenizer, texts: list[str]) -> torch.Tensor:
    """Return the pooled embeddings of texts padded into one batch."""
    token_lists = tokenize(tokenizer, texts, max_length=64)
    input_ids, attention_mask = collate_tokens(token_lists, tokenizer.pad_token_id)
    with torch.no_grad():
        return encoder(input_ids, attention_mask)


def test_resolve_minilm_packaged_folder() -> None:
    folder = resolve_text_model("minilm")

    assert Path(folder) == packaged_folder()


def test_resolve_minilm_folder_has_weights() -> None:
    folder = Path(resolve_text_model("minilm"))

    assert (folder / "model.safetensors").is_file()
    assert (folder / "config.json").is_file()


def test_resolve_other_name_unchanged() -> None:
    assert resolve_text_model("/models/bert-tiny") == "/models/bert-tiny"


def test_check_sha256_packaged_file_passes() -> None:
    _check_sha256(packaged_folder() / "model.safetensors", MINILM_SHA256)


def test_check_sha256_corrupted_copy_raises(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(packaged_folder(), copy)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as file:
        file.seek(1000)
        byte = file.read(1)
        file.seek(1000)
        file.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(TextModelError, match="SHA-256"):
        _check_sha256(weights, MINILM_SHA256)


def test_check_sha256_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(TextModelError, match="not found"):
        _check_sha256(tmp_path / "model.safetensors", MINILM_SHA256)


def test_minilm_embedding_dim(minilm) -> None:
    assert minilm.embedding_dim == 384


def test_minilm_pretrained_similarity(minilm, tokenizer) -> None:
    embeddings = encode(minilm, tokenizer, ["plastic bottle", "plastic container"])
    other = encode(minilm, tokenizer, ["steel bolt"])

    similar = torch.cosine_similarity(embeddings[0], embeddings[1], dim=0)
    unrelated = torch.cosine_similarity(embeddings[0], other[0], dim=0)

    # Random weights would not separate related from unrelated goods names.
    assert similar > unrelated + 0.3


def test_tokenizer_lowercases_english(tokenizer) -> None:
    tokens = tokenizer.tokenize("PLASTIC Container")

    assert tokens == ["plastic", "container"]


def test_tokenizer_splits_hangul_into_jamo(tokenizer) -> None:
    # The uncased vocabulary contains no Hangul syllables but does contain
    # conjoining jamo, and accent stripping applies NFD, which splits syllables.
    tokens = tokenizer.tokenize("가")

    jamo = unicodedata.normalize("NFD", "가")
    assert tokens == [jamo[0], "##" + jamo[1]]


def test_tokenizer_korean_has_no_unknown(tokenizer) -> None:
    ids = tokenizer("플라스틱 용기 노트북 컴퓨터")["input_ids"]

    assert tokenizer.unk_token_id not in ids


def test_tokenizer_korean_costs_tokens_per_jamo(tokenizer) -> None:
    # 용기 is 용 (ᄋ ᅭ ᆼ) and 기 (ᄀ ᅵ): five jamo become five tokens.
    tokens = tokenizer.tokenize("용기")

    assert len(tokens) == 5


def test_pooling_ignores_padding(tiny_encoder, tokenizer) -> None:
    text = "steel bolt"
    longer = "steel bolt with hexagon nut and washer, zinc plated"

    alone = encode(tiny_encoder, tokenizer, [text])
    padded = encode(tiny_encoder, tokenizer, [text, longer])

    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_pooling_ignores_padding_minilm(minilm, tokenizer) -> None:
    alone = encode(minilm, tokenizer, ["horse"])
    padded = encode(minilm, tokenizer, ["horse", "live horses for breeding"])

    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_pooling_is_masked_mean(tiny_encoder) -> None:
    input_ids = torch.tensor([[101, 2000, 3000, 102, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])

    with torch.no_grad():
        pooled = tiny_encoder(input_ids, attention_mask)
        states = tiny_encoder.backbone(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state

    assert torch.allclose(pooled[0], states[0, :4].mean(dim=0), atol=1e-6)


def test_pooling_output_shape(tiny_encoder, tokenizer) -> None:
    embeddings = encode(tiny_encoder, tokenizer, ["a", "bb cc", "dd ee ff"])

    assert embeddings.shape == (3, TINY_BERT["hidden_size"])


def test_from_config_embedding_dim(tiny_encoder) -> None:
    assert tiny_encoder.embedding_dim == TINY_BERT["hidden_size"]


def test_from_saved_config_same_shapes(tiny_encoder) -> None:
    # Training stores the backbone's full config dict in the checkpoint.
    rebuilt = create_text_encoder_from_config(tiny_encoder.backbone.config.to_dict())

    expected = {k: v.shape for k, v in tiny_encoder.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == expected
