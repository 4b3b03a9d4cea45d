"""The accuracy report: the source study's four models, baselines and the default model.

The source study fine-tuned KoELECTRA and ResNet-50 on 14,800 Korean
customs cases of chapters 84, 85 and 90 and fused them by concatenation
or a weighted sum. `STUDY` contains the figures it reports.

Every figure is measured here, on the frozen evaluation set of the
champion's training scope: each registered model is scored again, the
baselines are fitted on the same training side. `hscode.report_render`
turns the result into HTML or Markdown.
"""

import logging
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import EvaluationMember, EvaluationSet, ModelVersion
from db.nomenclature import load_code_names
from db.registry import get_champion
from db.storage import ObjectStore
from model.predict import decode_predictions
from training.baselines import tfidf_baseline, zero_shot_baseline
from training.calibration import (
    TARGET_PRECISION,
    auto_accept,
    coverage_curve,
    expected_calibration_error,
    reliability_bins,
)
from training.data import Example, load_examples
from training.evaluate import accuracy_metrics, heading_confidence, probabilities_of
from training.evaluation_set import separate
from training.refresh import version_logits
from training.settings import TrainSettings

logger = logging.getLogger(__name__)

STUDY = {
    "text": ("Text (KoELECTRA in the study)", 0.704, 0.614),
    "image": ("Image (ResNet-50)", 0.303, 0.257),
    "concat": ("Concatenation fusion", 0.692, 0.425),
    "weighted": ("Weighted-sum fusion", 0.738, 0.558),
}
"""Label, heading and subheading top-1 accuracy of the source study's models."""

TARGETS = {
    "heading_top1": 0.75,
    "subheading_top1": 0.66,
    "subheading_top3": 0.85,
    "heading_ece": 0.03,
    "auto_accept_share": 0.60,
    "training_minutes": 60.0,
    "missing_photo_gap_points": 1.0,
    "evidence_hit_rate": 0.80,
}
COVERAGE_POINTS = 200
"""Points kept of the accuracy-versus-coverage curve, enough for a smooth plot."""
CONFUSED_PAIRS = 10

NO_PHOTO_NOTE = (
    "No photographs labelled with HS codes are available, and no ImageNet "
    "weights for ResNet-50: image and fusion models are trained and tested "
    "on goods names alone, so their rows measure how they score without a "
    "photo, not image accuracy. The image model without photos can only "
    "predict the most frequent classes."
)


class ReportError(RuntimeError):
    """The report cannot be built from what the registry holds."""


def build_report(
    sessions: sessionmaker[Session], store: ObjectStore, device, *, baselines: bool = True
) -> dict:
    """Measure every model and baseline on the champion's evaluation set.

    Returns the dict that `hscode.report_render.render_report` renders.
    """
    device = torch.device(device)
    with sessions() as session:
        champion = get_champion(session)
        if champion is None:
            raise ReportError("no champion model: train one with `hscode train` first")
        chapters = tuple(champion.settings.get("chapters") or ())
        examples = load_examples(session, chapters)
        frozen_ids = _evaluation_ids(session, champion.evaluation_set)
        study_versions = _study_versions(session, champion.evaluation_set)
        session.expunge_all()
    trainable, test_rows = separate(examples, frozen_ids)
    if not test_rows:
        raise ReportError(
            f"the evaluation set {champion.evaluation_set!r} has no labelled rows"
        )
    names = load_code_names()
    codes = [row.hs_code for row in test_rows]
    logger.info("report: %d evaluation rows, %d training and validation rows, "
                "chapters %s",
                len(test_rows), len(trainable), ",".join(chapters) or "all")

    models, measured, notes = [], {}, _notes(test_rows)
    for fusion, version in study_versions.items():
        label, study_heading, study_subheading = STUDY[fusion]
        metrics = _measure(store, version, test_rows, device) if version else None
        measured[fusion] = metrics
        models.append(_model_row(
            fusion, label, "study", version, metrics, study_heading, study_subheading,
            _trained_with(version) if version else f"not trained: `hscode train "
            f"--model {fusion} --ngram-buckets 0 --no-nomenclature-names`",
        ))

    if baselines:
        started = time.monotonic()
        tfidf = tfidf_baseline(trainable, test_rows)
        logger.info("report: TF-IDF baseline in %.0f s", time.monotonic() - started)
        models.append(_model_row("tfidf", "TF-IDF character and word n-grams, "
                                 "linear SVM", "baseline", None, tfidf))
        zero_shot = zero_shot_baseline(test_rows, names, chapters)
        models.append(_model_row("zero-shot", "Zero-shot nomenclature names "
                                 "(pretrained MiniLM)", "baseline", None, zero_shot,
                                 note="no training"))
    else:
        notes.append("The baselines were skipped (--no-baselines).")

    model, logits = version_logits(store, champion, test_rows, device)
    probabilities = probabilities_of(model, logits)
    default = accuracy_metrics(probabilities, codes, model.labels)
    models.append(_model_row(
        "champion", _describe(champion), "product", champion, default,
        note=_trained_with(champion), default=True,
    ))

    better = [m["label"] for m in models
              if m["group"] == "baseline" and m["heading_top1"] > default["heading_accuracy"]]
    if better:
        notes.append(f"The champion's heading accuracy is below that of: "
                     f"{', '.join(better)}. Train longer or on more decided cases.")

    calibration, coverage = _calibration(model, logits, probabilities, codes)
    report = {
        "title": "HS classification accuracy report",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": {
            "chapters": list(chapters),
            "split": "Grouped split: no normalised goods name lies on both sides; "
            "the evaluation set is frozen when first created.",
            "train_count": champion.metrics.get("train_count"),
            "validation_count": champion.metrics.get("validation_count"),
            "test_count": len(test_rows),
            "evaluation_set": champion.evaluation_set,
        },
        "notes": notes,
        "models": models,
        "chapters": [
            {"chapter": chapter, **stats} for chapter, stats in default["chapters"].items()
        ],
        "calibration": calibration,
        "coverage": coverage,
        "confused_pairs": _confused_pairs(probabilities, model.labels, codes, names),
    }
    report["targets"] = _targets(default, calibration, coverage, champion, measured)
    return report


def _evaluation_ids(session: Session, name: str) -> set[int]:
    frozen = session.scalar(select(EvaluationSet).where(EvaluationSet.name == name))
    if frozen is None:
        raise ReportError(f"the champion's evaluation set {name!r} is missing")
    return set(session.scalars(
        select(EvaluationMember.declaration_id).where(EvaluationMember.set_id == frozen.id)
    ))


def _study_versions(session: Session, evaluation_set: str) -> dict:
    """The newest version of each study model: its fusion, trained on cases alone.

    That is without the n-gram view and without the nomenclature names.
    """
    versions = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.evaluation_set == evaluation_set)
        .order_by(ModelVersion.id.desc())
    ).all()
    found = {}
    for fusion in STUDY:
        found[fusion] = next(
            (v for v in versions
             if v.fusion == fusion and not v.settings.get("ngram_buckets")
             and not v.settings.get("nomenclature_names")),
            None,
        )
    return found


def _measure(store: ObjectStore, version: ModelVersion, rows: list[Example], device):
    """Accuracy of a version on rows with their photos hidden, as no photo exists."""
    hidden = [replace(row, image_key=None) for row in rows]
    model, logits = version_logits(store, version, hidden, device)
    metrics = accuracy_metrics(probabilities_of(model, logits),
                               [row.hs_code for row in rows], model.labels)
    logger.info("report: model version %d (%s): heading %.4f, subheading %.4f",
                version.id, version.fusion, metrics["heading_accuracy"],
                metrics["subheading_accuracy"])
    return metrics


def _model_row(name, label, group, version, metrics, study_heading=None,
               study_subheading=None, note=None, *, default=False) -> dict:
    metrics = metrics or {}
    return {
        "name": name,
        "label": label,
        "group": group,
        "version": version.id if version else None,
        "heading_top1": metrics.get("heading_accuracy"),
        "heading_top3": metrics.get("heading_top3_accuracy"),
        "subheading_top1": metrics.get("subheading_accuracy"),
        "subheading_top3": metrics.get("subheading_top3_accuracy"),
        "study_heading": study_heading,
        "study_subheading": study_subheading,
        "default": default,
        "note": note,
    }


def _trained_with(version: ModelVersion) -> str:
    """Say how a version was trained: id, encoder, epochs and rows."""
    settings = version.settings
    encoder = version.text_encoder or "no text encoder"
    return (
        f"version {version.id}, {encoder}, {_epochs(settings.get('epochs'))} on "
        f"{version.metrics.get('train_count')} decided cases"
    )


def _epochs(count: int | None) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _describe(version: ModelVersion) -> str:
    settings = version.settings
    parts = [f"{version.fusion.capitalize()} model"]
    if version.text_encoder:
        parts.append(f"{version.text_encoder} encoder")
    if settings.get("ngram_buckets"):
        parts.append("character and word n-grams")
    if settings.get("nomenclature_names"):
        parts.append("nomenclature names")
    return ", ".join(parts)


def _notes(rows: list[Example]) -> list[str]:
    with_photo = sum(1 for row in rows if row.image_key)
    notes = [] if with_photo else [NO_PHOTO_NOTE]
    notes.append(
        "Every model is scored again on the evaluation set. The study's figures "
        "come from its own split of full declarations; this grouped split of "
        "goods names is stricter."
    )
    return notes


def _calibration(model, logits, probabilities, codes):
    confidence, correct = heading_confidence(probabilities, codes, model.labels)
    uncalibrated = probabilities_of(model, logits, calibrated=False)
    raw_confidence, raw_correct = heading_confidence(uncalibrated, codes, model.labels)
    calibration = {
        "temperature": model.config.temperature,
        "confidence_map": model.config.confidence_map,
        "ece": expected_calibration_error(confidence, correct),
        "ece_uncalibrated": expected_calibration_error(raw_confidence, raw_correct),
        "bins": reliability_bins(confidence, correct),
    }
    points = coverage_curve(confidence, correct)
    share, threshold = auto_accept(points, TARGET_PRECISION)
    step = max(1, len(points) // COVERAGE_POINTS)
    kept = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
    coverage = {
        "points": kept,
        "target_precision": TARGET_PRECISION,
        "auto_accept_share": share,
        "auto_accept_threshold": threshold,
    }
    return calibration, coverage


def _confused_pairs(probabilities, labels, codes, names) -> list[dict]:
    predictions = decode_predictions(probabilities, labels, k=1)
    pairs = Counter(
        (code[:4], prediction.heading)
        for prediction, code in zip(predictions, codes, strict=True)
        if prediction.heading != code[:4]
    )

    def name(code: str) -> str | None:
        found = names.get(code)
        return found.name_en if found else None

    return [
        {"decided": decided, "decided_name": name(decided),
         "predicted": predicted, "predicted_name": name(predicted), "count": count}
        for (decided, predicted), count in pairs.most_common(CONFUSED_PAIRS)
    ]


def _targets(default, calibration, coverage, champion, measured) -> list[dict]:
    """Return each target with its threshold and measured value, numeric and as text."""
    training = champion.metrics.get("training_seconds")
    minutes = None if training is None else training / 60
    hit_rate = champion.metrics.get("test", {}).get("evidence_subheading_hit_rate")
    gap = _missing_photo_gap(measured)
    epochs = champion.settings.get("epochs")
    full_epochs = TrainSettings().epochs
    if epochs != full_epochs:
        # The time of a shorter or longer run does not measure a full one.
        minutes = None
    rows = [
        ("heading top-1", default["heading_accuracy"], ">=", TARGETS["heading_top1"],
         _percent, None),
        ("subheading top-1", default["subheading_accuracy"], ">=",
         TARGETS["subheading_top1"], _percent, None),
        ("subheading top-3", default["subheading_top3_accuracy"], ">=",
         TARGETS["subheading_top3"], _percent, None),
        ("expected calibration error of the heading probability (15 bins)",
         calibration["ece"], "<=", TARGETS["heading_ece"], "{:.3f}".format, None),
        ("declarations auto-accepted at 97% heading precision",
         coverage["auto_accept_share"], ">=", TARGETS["auto_accept_share"], _percent,
         "no threshold reaches 97% heading precision"),
        (f"training time of the champion, a full run of {full_epochs} epochs",
         minutes, "<=", TARGETS["training_minutes"], "{:.1f} minutes".format,
         "not recorded for this version" if epochs == full_epochs else
         f"the champion trained {epochs} epochs, not {full_epochs}"),
        (("heading top-1 of the fused study models without a photo, below the "
          "text model"), gap, "<=", TARGETS["missing_photo_gap_points"],
         "{:.1f} points".format, _missing_fused_hint(measured)),
        (("similar decided cases shown as evidence: one of the three has the "
          "right subheading (measured when the champion was trained)"), hit_rate, ">=",
         TARGETS["evidence_hit_rate"], _percent, "not recorded for this version"),
    ]
    return [_target(*row) for row in rows]


def _target(name, value, relation, threshold, shown, missing) -> dict:
    word = "at least" if relation == ">=" else "at most"
    met = None
    if value is not None:
        met = value >= threshold if relation == ">=" else value <= threshold
    return {
        "name": name,
        "target": f"{word} {shown(threshold)}",
        "measured": shown(value) if value is not None else missing,
        "value": value,
        "relation": relation,
        "threshold": threshold,
        "met": met,
    }


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _missing_fused_hint(measured: dict) -> str:
    """Say which study models the missing-photo comparison still needs."""
    missing = []
    if measured.get("text") is None:
        missing.append("text")
    if not (measured.get("concat") or measured.get("weighted")):
        missing.append("concat or weighted")
    return f"train the {' and the '.join(missing)} study model (see their rows)"


def _missing_photo_gap(measured: dict) -> float | None:
    """Largest heading top-1 shortfall, in points, of a fused model below the text model."""
    text = measured.get("text")
    fused = [measured.get(f) for f in ("concat", "weighted") if measured.get(f)]
    if text is None or not fused:
        return None
    return max(
        max(0.0, 100 * (text["heading_accuracy"] - m["heading_accuracy"])) for m in fused
    )
