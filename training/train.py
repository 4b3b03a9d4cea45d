"""The training entry point: settings, data, model, optimiser, loop, checkpoint."""

import copy
import logging
import random
import time
from dataclasses import dataclass, replace

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import HsCode, ModelVersion
from db.nomenclature import HS_EDITION
from db.storage import ObjectStore
from model.device import resolve_device
from model.fusion import HSClassifier, ModelConfig, hierarchical_loss
from model.images import ImageEncoder, create_eval_transform, create_train_transform
from model.inference import autocast_for
from model.inputs import shuffled_length_batches
from model.labels import LabelSpace
from model.text import create_text_encoder, load_tokenizer
from training.batches import ExampleTensors, batch_inputs, new_photo_pool
from training.calibration import fit_confidence_map, fit_temperature
from training.data import Example, fingerprint, grouped_split, load_examples
from training.evaluate import (
    collect_logits,
    evaluate_model,
    heading_confidence,
    load_batch_photos,
    probabilities_of,
)
from training.evaluation_set import evaluation_set_name, load_or_freeze, separate
from training.evidence import build_evidence_index, evidence_hit_rate
from training.progress import EpochProgress
from training.register import register_model
from training.settings import TrainSettings

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainedModel:
    """A registered candidate and the frozen evaluation rows it was tested on."""

    version: ModelVersion
    evaluation_rows: list[Example]
    device: torch.device


AUTO_IMAGE_SHARE = 0.1
"""Share of training declarations with a photo above which `auto` fuses images."""


class TrainingError(RuntimeError):
    """Training cannot start with the data or settings given."""


def train(
    sessions: sessionmaker[Session], store: ObjectStore, settings: TrainSettings
) -> TrainedModel:
    """Train on every labelled declaration outside the frozen set; register it.

    The new version is a candidate; `training.refresh` decides its promotion.
    """
    started = time.monotonic()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    device = resolve_device(settings.device)

    # Data: the frozen evaluation set, then validation carved from the rest.
    with sessions() as session, session.begin():
        examples = load_examples(session, settings.chapters)
        names = _code_names(session)
        _check_enough(examples)
        frozen_name = evaluation_set_name(
            settings.chapters, settings.test_fraction, settings.seed
        )
        frozen_ids = load_or_freeze(
            session, frozen_name, examples, settings.test_fraction, settings.seed
        )
    trainable, test_rows = separate(examples, frozen_ids)
    train_rows, val_rows = _carve_validation(trainable, test_rows, settings)
    labels = LabelSpace.from_codes((e.hs_code for e in train_rows), HS_EDITION, names)
    name_rows = nomenclature_examples(labels) if settings.nomenclature_names else []
    settings = replace(settings, fusion=_resolve_fusion(settings, train_rows))
    logger.info(
        "training %s model on %d rows and %d nomenclature names (validation %d, "
        "test %d), %d headings, %d subheadings, device %s",
        settings.fusion, len(train_rows), len(name_rows), len(val_rows), len(test_rows),
        len(labels.headings), len(labels.subheadings), device,
    )

    # Model and tokenised data.
    model, tokenizer = create_untrained_model(settings, labels)
    model.to(device)
    train_data = ExampleTensors(train_rows + name_rows, tokenizer, labels, model.config)
    val_data = ExampleTensors(val_rows, tokenizer, labels, model.config)
    test_data = ExampleTensors(test_rows, tokenizer, labels, model.config)
    train_transform = create_train_transform(settings.image_size)
    eval_transform = create_eval_transform(settings.image_size)
    photo_pool = new_photo_pool()

    # Optimiser: AdamW, heads faster than the pretrained encoders, linear warmup and decay.
    optimizer = _create_optimizer(model, settings)
    steps = settings.epochs * -(-len(train_rows) // settings.batch_size)
    scheduler = _create_scheduler(optimizer, steps, settings.warmup_fraction)

    # Loop: keep the weights of the epoch with the best validation accuracy.
    best_state, best_accuracy, history = None, -1.0, []
    for epoch in range(1, settings.epochs + 1):
        batches = shuffled_length_batches(train_data.lengths, settings.batch_size, rng)
        progress = EpochProgress(epoch, settings.epochs, len(batches), settings.log_every)
        model.train()
        for step, rows in enumerate(batches, start=1):
            data_started = time.perf_counter()
            photos = load_batch_photos(model, store, train_data, rows, train_transform, photo_pool)
            photos = _hide_photos(photos, settings.modality_dropout, rng)
            inputs = batch_inputs(train_data, rows, photos, device)
            data_seconds = time.perf_counter() - data_started

            with autocast_for(device, True):
                logits = model(**inputs)
            loss = hierarchical_loss(
                logits.float(), train_data.subheadings[rows].to(device),
                train_data.headings[rows].to(device), model.parent_index,
                len(labels.headings), settings.label_smoothing,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            progress.update(step, len(rows), loss.item(), data_seconds)
        progress.close()

        selection = val_data if val_rows else test_data
        metrics = evaluate_model(model, store, selection, eval_transform, photo_pool, device)
        history.append({"epoch": epoch, **metrics})
        logger.info(
            "epoch %d/%d: validation heading %.4f, subheading %.4f",
            epoch, settings.epochs, metrics["heading_accuracy"],
            metrics["subheading_accuracy"],
        )
        if metrics["heading_accuracy"] > best_accuracy:
            best_accuracy = metrics["heading_accuracy"]
            best_state = copy.deepcopy(model.state_dict())

    # Calibration: the temperature that fits the selected weights' validation logits.
    model.load_state_dict(best_state)
    selection = val_data if val_rows else test_data
    logits = collect_logits(model, store, selection, eval_transform, photo_pool, device)
    model.config.temperature = fit_temperature(
        logits, selection.subheadings, selection.headings, model.parent_index.cpu()
    )
    confidence, correct = heading_confidence(
        probabilities_of(model, logits), selection.codes, labels
    )
    model.config.confidence_map = fit_confidence_map(confidence, correct)
    logger.info("calibration: softmax temperature %.3f, best-heading map a=%.2f b=%.2f",
                model.config.temperature, *model.config.confidence_map)

    # Test: the frozen evaluation set, with the selected weights.
    test_metrics = evaluate_model(model, store, test_data, eval_transform, photo_pool, device)
    photo_pool.shutdown()
    logger.info(
        "test: heading %.4f, subheading %.4f on %d rows, heading ECE %.4f",
        test_metrics["heading_accuracy"], test_metrics["subheading_accuracy"],
        test_metrics["count"], test_metrics["heading_ece"],
    )

    # Evidence: the decided training cases, embedded by the selected weights.
    evidence = None
    if model.config.uses_text:
        decided = ExampleTensors(train_rows, tokenizer, labels, model.config)
        evidence = build_evidence_index(sessions, model, [decided, val_data], device)
        hit_rate = evidence_hit_rate(evidence, model, test_data, device)
        test_metrics["evidence_subheading_hit_rate"] = hit_rate
        logger.info("test: evidence subheading hit rate %.4f", hit_rate)

    # Checkpoint: weights in the store, a registered candidate.
    metrics = {"test": test_metrics, "validation_history": history,
               "train_count": len(train_rows), "validation_count": len(val_rows),
               "temperature": model.config.temperature,
               "confidence_map": model.config.confidence_map,
               "training_seconds": round(time.monotonic() - started, 1)}
    version = register_model(
        sessions, store, model, tokenizer, settings, metrics,
        data_fingerprint=fingerprint(train_rows + val_rows),
        evaluation_set=frozen_name,
        evidence=evidence,
    )
    return TrainedModel(version, test_rows, device)


def _check_enough(examples: list[Example]) -> None:
    if len(examples) < 10:
        raise TrainingError(
            f"found {len(examples)} labelled declarations; training needs at least "
            "10 (ingest a manifest with an hs_code column first)"
        )


def _carve_validation(trainable, test_rows, settings: TrainSettings):
    if not test_rows or not trainable:
        raise TrainingError(
            "the frozen evaluation set or the training side is empty; add more "
            "labelled declarations"
        )
    if settings.validation_fraction <= 0:
        return trainable, []
    return grouped_split(trainable, settings.validation_fraction, settings.seed)


def nomenclature_examples(labels: LabelSpace) -> list[Example]:
    """Return the English and Korean name of every subheading as a labelled example.

    The names teach the words of the nomenclature that decided cases rarely
    use. Their ids are negative, so they never mix with declarations.
    """
    examples = []
    for code in labels.subheadings:
        for name in labels.names.get(code, (None, None)):
            if name:
                examples.append(Example(-1 - len(examples), name, None, code + "0000"))
    return examples


def _code_names(session: Session) -> dict[str, tuple[str | None, str | None]]:
    rows = session.execute(select(HsCode.code, HsCode.name_en, HsCode.name_ko))
    return {code: (en, ko) for code, en, ko in rows}


def _resolve_fusion(settings: TrainSettings, rows: list[Example]) -> str:
    if settings.fusion != "auto":
        return settings.fusion

    # A few photos cannot train an image encoder, least of all from random
    # weights, and would only add noise to the text model's predictions.
    with_photo = sum(1 for e in rows if e.image_key) / len(rows)
    return "weighted" if with_photo >= AUTO_IMAGE_SHARE else "text"


def create_untrained_model(settings: TrainSettings, labels: LabelSpace):
    """Build a model of the settings' fusion from pretrained encoders, with its tokenizer."""
    config = ModelConfig(
        fusion=settings.fusion,
        text_model=None,
        text_config=None,
        max_length=settings.max_length,
        image_size=settings.image_size,
        ngram_buckets=settings.ngram_buckets if settings.fusion != "image" else 0,
        ngram_dim=settings.ngram_dim,
        evidence_ngrams=settings.ngram_buckets > 0 and settings.fusion != "image",
        labels=labels.to_dict(),
        training=settings.to_dict(),
    )
    text_encoder, tokenizer, image_encoder = None, None, None
    if config.uses_text:
        text_encoder = create_text_encoder(settings.text_model)
        tokenizer = load_tokenizer(settings.text_model)
        config.text_model = settings.text_model
        config.text_config = text_encoder.backbone.config.to_dict()
    if config.uses_image:
        image_encoder = ImageEncoder(settings.image_weights)
    return HSClassifier(config, text_encoder, image_encoder), tokenizer


def _create_optimizer(model: HSClassifier, settings: TrainSettings):
    encoders = [model.text_encoder, model.image_encoder]
    encoder_ids = {id(p) for e in encoders if e is not None for p in e.parameters()}
    ngram_ids = {
        id(p) for name, p in model.named_parameters() if name.startswith("ngram_")
    }
    groups = {"encoders": [], "heads": [], "ngrams": []}
    for parameter in model.parameters():
        if id(parameter) in encoder_ids:
            groups["encoders"].append(parameter)
        elif id(parameter) in ngram_ids:
            groups["ngrams"].append(parameter)
        else:
            groups["heads"].append(parameter)
    # The n-gram view starts from random buckets and learns at its own, higher rate.
    return torch.optim.AdamW(
        [
            {"params": groups["encoders"], "lr": settings.learning_rate},
            {"params": groups["heads"], "lr": settings.learning_rate * 10},
            {"params": groups["ngrams"], "lr": settings.ngram_learning_rate},
        ],
        weight_decay=settings.weight_decay,
    )


def _create_scheduler(optimizer, steps: int, warmup_fraction: float):
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _hide_photos(photos, share: float, rng: random.Random):
    if photos is None or share <= 0:
        return photos
    return [None if rng.random() < share else photo for photo in photos]
