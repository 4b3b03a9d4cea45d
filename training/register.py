"""Saving a trained model to the store and recording it in `model_versions`."""

import logging
import tempfile
import uuid
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.models import ModelVersion
from db.registry import CANDIDATE
from db.storage import ObjectStore, put_folder_archive
from model.checkpoint import save_checkpoint
from model.evidence import EvidenceIndex
from model.fusion import HSClassifier
from training.settings import TrainSettings

logger = logging.getLogger(__name__)


def register_model(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    model: HSClassifier,
    tokenizer,
    settings: TrainSettings,
    metrics: dict,
    *,
    data_fingerprint: str,
    evaluation_set: str,
    evidence: EvidenceIndex | None = None,
) -> ModelVersion:
    """Store the checkpoint, with its evidence, and add the version as a candidate."""
    model.config.training = settings.to_dict()
    key = f"models/{uuid.uuid4().hex}.tar"
    with tempfile.TemporaryDirectory(prefix="hscode-checkpoint-") as folder:
        save_checkpoint(model, tokenizer, Path(folder))
        if evidence is not None:
            evidence.save(Path(folder))
        size = put_folder_archive(store, key, Path(folder))

    config = model.config
    with sessions() as session, session.begin():
        version = ModelVersion(
            fusion=config.fusion,
            text_encoder=config.text_model,
            image_encoder="resnet50" if config.uses_image else None,
            label_space={
                "headings": len(model.labels.headings),
                "subheadings": len(model.labels.subheadings),
            },
            hs_edition=model.labels.edition,
            settings=settings.to_dict(),
            weights_key=key,
            data_fingerprint=data_fingerprint,
            evaluation_set=evaluation_set,
            metrics=metrics,
            status=CANDIDATE,
        )
        session.add(version)
    logger.info(
        "registered model version %d (%s, %.1f MB at %s)",
        version.id, config.fusion, size / 1e6, key,
    )
    return version
