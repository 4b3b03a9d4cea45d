"""A model refresh: train a candidate, compare it with the champion, decide.

`hscode train` and the scheduled Celery task both run `refresh`.
"""

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.models import ModelVersion, PromotionDecision
from db.registry import get_champion
from db.storage import ObjectStore, get_folder_archive
from model.checkpoint import load_checkpoint
from model.images import create_eval_transform
from training.batches import ExampleTensors, new_photo_pool
from training.data import Example
from training.evaluate import collect_logits, metrics_from_logits
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
    with sessions() as session:
        champion = get_champion(session)
    settings = _default_scope(settings, champion)
    trained = train(sessions, store, settings)
    candidate_metrics = trained.version.metrics["test"]

    # Another refresh or a person may have changed the champion meanwhile.
    with sessions() as session:
        champion = get_champion(session)

    # Both models must be scored on one frozen set that neither trained on.
    champion_metrics, mismatch = None, None
    if champion is not None and champion.evaluation_set != trained.version.evaluation_set:
        mismatch = (
            f"champion version {champion.id} was evaluated on {champion.evaluation_set!r}, "
            f"the candidate on {trained.version.evaluation_set!r}; train with the "
            "champion's chapters, or promote by hand with `hscode promote`"
        )
    elif champion is not None:
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
                          policy, actor, mismatch,
                          evaluated_champion_id=champion.id if champion else None)
    return RefreshResult(version, decision)


def _default_scope(settings: TrainSettings, champion: ModelVersion | None):
    """Train on the champion's chapters when none are given, so both share a set."""
    if settings.chapters or champion is None:
        return settings
    chapters = tuple(champion.settings.get("chapters") or ())
    if chapters:
        logger.info("no chapters given: training on the champion's chapters %s",
                    ",".join(chapters))
    return replace(settings, chapters=chapters)


def load_version(store: ObjectStore, version: ModelVersion, device):
    """Fetch a stored model version's checkpoint; return the model and tokenizer."""
    with tempfile.TemporaryDirectory(prefix="hscode-evaluate-") as folder:
        checkpoint = Path(folder) / "checkpoint"
        get_folder_archive(store, version.weights_key, checkpoint)
        return load_checkpoint(checkpoint, device)


def version_logits(store: ObjectStore, version: ModelVersion, rows: list[Example],
                   device):
    """Score a stored model version on rows; return the model and its logits [N, S]."""
    model, tokenizer = load_version(store, version, device)
    data = ExampleTensors(rows, tokenizer, model.labels, model.config)
    transform = create_eval_transform(model.config.image_size)
    with new_photo_pool() as pool:
        return model, collect_logits(model, store, data, transform, pool, device)


def evaluate_version(store: ObjectStore, version: ModelVersion, rows: list[Example],
                     device) -> dict:
    """Score a stored model version on labelled rows; return its metrics."""
    model, logits = version_logits(store, version, rows, device)
    return metrics_from_logits(model, logits, [row.hs_code for row in rows])
