"""A model refresh: train a candidate, compare it with the champion, decide.

`hscode train` and the scheduled Celery task both run `refresh`.
"""

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.models import ModelVersion, PromotionDecision
from db.registry import get_champion
from db.storage import ObjectStore, get_folder_archive
from model.checkpoint import load_checkpoint
from model.images import create_eval_transform
from training.batches import ExampleTensors, new_photo_pool
from training.data import Example
from training.evaluate import evaluate_model
from training.promotion import PromotionPolicy, decide
from training.settings import TrainSettings
from training.train import train

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshResult:
    """The new candidate and the promotion decision taken on it."""

    version: ModelVersion
    decision: PromotionDecision


def refresh(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    settings: TrainSettings,
    policy: PromotionPolicy | None = None,
    actor: str = "hscode train",
) -> RefreshResult:
    """Train on every labelled declaration, then promote the model only if better."""
    policy = policy or PromotionPolicy()
    trained = train(sessions, store, settings)
    candidate_metrics = trained.version.metrics["test"]

    with sessions() as session:
        champion = get_champion(session)
    champion_metrics = None
    if champion is not None:
        champion_metrics = evaluate_version(
            store, champion, trained.evaluation_rows, trained.device
        )
        logger.info(
            "champion version %d on the frozen set: heading %.4f, subheading %.4f",
            champion.id, champion_metrics["heading_accuracy"],
            champion_metrics["subheading_accuracy"],
        )

    with sessions() as session, session.begin():
        version = session.get(ModelVersion, trained.version.id)
        decision = decide(session, version, candidate_metrics, champion_metrics,
                          policy, actor)
    return RefreshResult(version, decision)


def evaluate_version(store: ObjectStore, version: ModelVersion, rows: list[Example],
                     device) -> dict:
    """Score a stored model version on labelled rows; return its metrics."""
    with tempfile.TemporaryDirectory(prefix="hscode-evaluate-") as folder:
        checkpoint = Path(folder) / "checkpoint"
        get_folder_archive(store, version.weights_key, checkpoint)
        model, tokenizer = load_checkpoint(checkpoint, device)

    data = ExampleTensors(rows, tokenizer, model.labels, model.config.max_length)
    transform = create_eval_transform(model.config.image_size)
    with new_photo_pool() as pool:
        return evaluate_model(model, store, data, transform, pool, device)
