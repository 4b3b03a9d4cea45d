"""The inference runtime: one loaded model per process, reloaded on a new version."""

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from db.models import ModelVersion
from db.storage import ObjectStore, get_folder_archive
from model.checkpoint import load_checkpoint
from model.device import resolve_device
from model.evidence import EvidenceIndex
from model.fusion import HSClassifier
from model.inference import predict_probabilities

logger = logging.getLogger(__name__)

MODEL_CACHE_DIR = "model-cache"


@dataclass
class LoadedModel:
    """A model version ready to score, with its tokenizer and device."""

    version_id: int
    model: HSClassifier
    tokenizer: object
    device: torch.device
    evidence: EvidenceIndex | None = None
    """The decided cases saved with the checkpoint; None for older checkpoints."""


class ModelCache:
    """Keeps the last model version used in memory; loads another on request."""

    def __init__(self, store: ObjectStore, cache_dir: Path, device: str) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.device = resolve_device(device)
        self.loaded: LoadedModel | None = None
        self._lock = threading.Lock()

    def get(self, version: ModelVersion) -> LoadedModel:
        """Return the version's model, loading it first if another one is loaded."""
        with self._lock:
            if self.loaded is None or self.loaded.version_id != version.id:
                self.loaded = self._load(version)
            return self.loaded

    def _load(self, version: ModelVersion) -> LoadedModel:
        started = time.perf_counter()
        # Keyed by the weights' unique key, never reused by another version.
        folder = self.cache_dir / MODEL_CACHE_DIR / Path(version.weights_key).stem
        if not folder.is_dir():
            get_folder_archive(self.store, version.weights_key, folder)

        # Free the old model before the new one takes memory.
        self.loaded = None
        model, tokenizer = load_checkpoint(folder, self.device)
        evidence = EvidenceIndex.load(folder)
        if model.image_encoder is not None:
            # ResNet-50 ran 1.3 times faster channels-last on CPUs too.
            model.image_encoder.to(memory_format=torch.channels_last)
        loaded = LoadedModel(version.id, model, tokenizer, self.device, evidence)
        warm_up(loaded)
        logger.info(
            "loaded and warmed up model version %d (%s) on %s in %.1fs",
            version.id, version.fusion, self.device, time.perf_counter() - started,
        )
        return loaded


WARM_UP_TEXT = "warm-up"


def warm_up(loaded: LoadedModel) -> None:
    """Run one small forward pass, so the first chunk pays no one-time set-up.

    The first pass allocates the kernels' workspaces and, on CUDA, loads the
    kernels and starts the cuBLAS and cuDNN handles.
    """
    config = loaded.model.config
    image = None
    if config.uses_image:
        image = torch.zeros(3, config.image_size, config.image_size)
    predict_probabilities(loaded.model, loaded.tokenizer, [WARM_UP_TEXT] * 2,
                          [image, None], text_embeddings=loaded.evidence is not None)
