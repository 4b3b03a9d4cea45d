"""Training settings: documented defaults, environment, then command-line overrides."""

import os
from dataclasses import asdict, dataclass, fields, replace

from model.fusion import FUSIONS


@dataclass(frozen=True)
class TrainSettings:
    """Resolved settings of one training run, saved with the model."""

    fusion: str = "auto"
    """text, image, concat, weighted, or auto: weighted when at least 10% of
    training declarations have a photo, text otherwise."""
    text_model: str = "minilm"
    """`minilm` (the packaged all-MiniLM-L6-v2), a local folder or a Hugging Face id."""
    image_weights: str | None = None
    """ResNet-50 state dict file with ImageNet weights; random start without it."""
    chapters: tuple[str, ...] = ()
    """Train on these 2-digit chapters only; all when empty."""
    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 8e-5
    """Encoder learning rate; the heads use 10 times this."""
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    label_smoothing: float = 0.1
    ngram_buckets: int = 1 << 17
    """Hash buckets of the word and character n-gram view; 0 trains the encoders
    alone, as the study did."""
    ngram_dim: int = 128
    ngram_learning_rate: float = 3e-3
    nomenclature_names: bool = True
    """Also train on each known subheading's English and Korean nomenclature names."""
    max_length: int = 64
    image_size: int = 224
    modality_dropout: float = 0.3
    """Share of training photos hidden, so the model learns to score without one."""
    test_fraction: float = 0.15
    validation_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    """Batches between progress log lines when not in a terminal."""

    def __post_init__(self) -> None:
        if self.fusion != "auto" and self.fusion not in FUSIONS:
            raise ValueError(f"fusion {self.fusion!r} is not auto or one of {FUSIONS}")
        if self.ngram_buckets < 0 or self.ngram_dim < 1:
            raise ValueError("ngram_buckets must be at least 0 and ngram_dim at least 1")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not 0 < self.test_fraction < 1 or not 0 <= self.validation_fraction < 1:
            raise ValueError("test_fraction and validation_fraction must be in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


def load_train_settings(**overrides) -> TrainSettings:
    """Read the `HSCODE_*` training variables, then apply non-None overrides.

    The variables are `HSCODE_TRAIN_CHAPTERS`, `HSCODE_TEXT_MODEL`,
    `HSCODE_DEVICE` and `HSCODE_RESNET50_WEIGHTS`.
    """
    chapters = os.environ.get("HSCODE_TRAIN_CHAPTERS") or ""
    settings = TrainSettings(
        chapters=tuple(c.strip() for c in chapters.split(",") if c.strip()),
        text_model=os.environ.get("HSCODE_TEXT_MODEL") or "minilm",
        device=os.environ.get("HSCODE_DEVICE") or "auto",
        image_weights=os.environ.get("HSCODE_RESNET50_WEIGHTS") or None,
    )
    known = {f.name for f in fields(TrainSettings)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown training settings: {sorted(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "chapters" in given:
        given["chapters"] = tuple(given["chapters"])
    return replace(settings, **given)
