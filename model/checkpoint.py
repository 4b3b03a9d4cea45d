"""Checkpoints: safetensors weights, a JSON config and the tokenizer, in one folder."""

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.fusion import HSClassifier, ModelConfig
from model.images import ImageEncoder
from model.text import create_text_encoder_from_config

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_FILES = (WEIGHTS_FILE, CONFIG_FILE)


def save_checkpoint(model: HSClassifier, tokenizer, folder: Path) -> list[Path]:
    """Write the model's weights, config and tokenizer; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(
        json.dumps(model.config.to_dict(), ensure_ascii=False, indent=1)
    )
    if tokenizer is not None:
        tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    return sorted(p for p in folder.rglob("*") if p.is_file())


def read_config(folder: Path) -> ModelConfig:
    """Read a checkpoint's model config."""
    return ModelConfig(**json.loads((folder / CONFIG_FILE).read_text()))


def create_model(config: ModelConfig, image_weights: str | None = None) -> HSClassifier:
    """Build an untrained model with the architecture a config describes."""
    text = create_text_encoder_from_config(config.text_config) if config.uses_text else None
    image = ImageEncoder(image_weights, warn=False) if config.uses_image else None
    return HSClassifier(config, text, image)


def load_checkpoint(folder: Path, device: str | torch.device = "cpu"):
    """Load a checkpoint folder; return the model in eval mode and its tokenizer."""
    from transformers import AutoTokenizer

    config = read_config(folder)
    model = create_model(config)
    model.load_state_dict(load_file(folder / WEIGHTS_FILE))
    model.to(device).eval()

    tokenizer = None
    if config.uses_text:
        tokenizer = AutoTokenizer.from_pretrained(folder / TOKENIZER_DIR)
    return model, tokenizer
