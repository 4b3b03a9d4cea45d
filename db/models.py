"""Tables of the product, as SQLAlchemy 2 declarative models."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
IdType = BigInteger().with_variant(Integer(), "sqlite")


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


class Declaration(Base):
    """One import declaration: goods description, optional photo and codes."""

    __tablename__ = "declarations"
    __table_args__ = (
        UniqueConstraint("source", "reference", name="uq_declarations_source_ref"),
        Index("ix_declarations_hs_code", "hs_code"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    declared_hs_code: Mapped[str | None] = mapped_column(String(10))
    hs_code: Mapped[str | None] = mapped_column(String(10))
    image_key: Mapped[str | None] = mapped_column(String(300))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )


class DeclarationChange(Base):
    """A decided or declared code changed by a later ingest."""

    __tablename__ = "declaration_changes"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    declaration_id: Mapped[int] = mapped_column(
        ForeignKey("declarations.id", ondelete="CASCADE"), index=True
    )
    field: Mapped[str] = mapped_column(String(40))
    old_value: Mapped[str | None] = mapped_column(String(10))
    new_value: Mapped[str | None] = mapped_column(String(10))
    origin: Mapped[str] = mapped_column(String(300))
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )


class IngestError(Base):
    """A manifest row that could not be loaded, with its line and reason."""

    __tablename__ = "ingest_errors"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), index=True)
    path: Mapped[str] = mapped_column(String(500))
    line: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )


class HsCode(Base):
    """A chapter, heading or subheading name from the shipped nomenclature."""

    __tablename__ = "hs_codes"

    code: Mapped[str] = mapped_column(String(6), primary_key=True)
    level: Mapped[int] = mapped_column(Integer)
    name_en: Mapped[str | None] = mapped_column(Text)
    name_ko: Mapped[str | None] = mapped_column(Text)


class ModelVersion(Base):
    """A trained model: how it was made, where its weights are, how it scored."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )
    fusion: Mapped[str] = mapped_column(String(20))
    text_encoder: Mapped[str | None] = mapped_column(String(300))
    image_encoder: Mapped[str | None] = mapped_column(String(100))
    label_space: Mapped[dict[str, Any]]
    hs_edition: Mapped[str] = mapped_column(String(40))
    settings: Mapped[dict[str, Any]]
    weights_key: Mapped[str] = mapped_column(String(300))
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    evaluation_set: Mapped[str] = mapped_column(String(200))
    metrics: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="candidate")
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Prediction(Base):
    """A model version's heading and subheading for one declaration."""

    __tablename__ = "predictions"
    __table_args__ = (
        # Serves the newest-prediction lookup of `latest_predictions`.
        Index(
            "ix_predictions_latest", "declaration_id", "created_at", "model_version_id"
        ),
        # Serves the time windows of the analysts' queries.
        Index("ix_predictions_created_at", "created_at"),
    )

    declaration_id: Mapped[int] = mapped_column(
        ForeignKey("declarations.id", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id"), primary_key=True
    )
    heading: Mapped[str] = mapped_column(String(4))
    heading_probability: Mapped[float] = mapped_column(Float)
    subheading: Mapped[str] = mapped_column(String(6))
    subheading_probability: Mapped[float] = mapped_column(Float)
    top_k: Mapped[list[Any]]
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    """The three nearest decided cases and the predicted codes' names."""
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )


class ScoringRun(Base):
    """A request to score declarations, split into chunks for the workers."""

    __tablename__ = "scoring_runs"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    source: Mapped[str | None] = mapped_column(String(200))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    total: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)


class ScoringChunk(Base):
    """A slice of a run's declaration ids; one Celery task scores it."""

    __tablename__ = "scoring_chunks"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("scoring_runs.id", ondelete="CASCADE"), index=True
    )
    declaration_ids: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    scored: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ScoringFailure(Base):
    """A declaration that a run could not score, with the last error."""

    __tablename__ = "scoring_failures"
    __table_args__ = (
        UniqueConstraint("run_id", "declaration_id", name="uq_failures_run_decl"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("scoring_runs.id", ondelete="CASCADE"), index=True
    )
    declaration_id: Mapped[int] = mapped_column(
        ForeignKey("declarations.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(String(40))
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    failed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )


class ScreeningPolicy(Base):
    """The one-row setting behind the `screening_flags` view."""

    __tablename__ = "screening_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    min_heading_probability: Mapped[float] = mapped_column(Float)
    auto_accept_min_probability: Mapped[float] = mapped_column(Float, default=0.9)
    """Heading probability below which a prediction needs review; set it from
    calibration."""


class EvaluationSet(Base):
    """A frozen set of labelled declarations that every model is compared on.

    It is fixed when first created, and its declarations (and any other
    declaration with the same normalised description) never enter training.
    """

    __tablename__ = "evaluation_sets"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )
    size: Mapped[int] = mapped_column(Integer)


class EvaluationMember(Base):
    """A declaration of a frozen evaluation set."""

    __tablename__ = "evaluation_members"

    set_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation_sets.id", ondelete="CASCADE"), primary_key=True
    )
    declaration_id: Mapped[int] = mapped_column(
        ForeignKey("declarations.id", ondelete="CASCADE"), primary_key=True
    )


class PromotionDecision(Base):
    """A change of champion, or a candidate kept out, with the evidence."""

    __tablename__ = "promotion_decisions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    decided_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now
    )
    action: Mapped[str] = mapped_column(String(20))
    """first, promote, reject, manual-promote or rollback."""
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    previous_champion_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id")
    )
    champion_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    reason: Mapped[str] = mapped_column(Text)
    candidate_metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    champion_metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    actor: Mapped[str] = mapped_column(String(100))


class ReviewDecision(Base):
    """A reviewer's decision on a declaration's code.

    `hscode review` writes applied rows. A row inserted directly has no
    `applied_at` until `hscode review --apply-pending` applies it, or sets
    `error` when it cannot be applied.
    """

    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    declaration_id: Mapped[int] = mapped_column(
        ForeignKey("declarations.id", ondelete="CASCADE"), index=True
    )
    decision: Mapped[str] = mapped_column(String(10))
    """accept, keep or set."""
    previous_hs_code: Mapped[str | None] = mapped_column(String(10))
    decided_hs_code: Mapped[str | None] = mapped_column(String(10))
    reviewer: Mapped[str] = mapped_column(String(100))
    decided_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, server_default=func.now(),
        index=True,
    )
    source_file: Mapped[str | None] = mapped_column(String(500))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
