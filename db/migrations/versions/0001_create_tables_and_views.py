"""Create tables and views.

Revision ID: 0001
Revises:
Create Date: 2026-12-04 16:42:05.893276
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


LATEST_PREDICTIONS = """
CREATE VIEW latest_predictions AS
SELECT
    d.id AS declaration_id,
    d.source,
    d.reference,
    d.description,
    d.declared_hs_code,
    d.hs_code AS decided_hs_code,
    p.model_version_id,
    p.heading,
    COALESCE(h.name_en, p.heading) AS heading_name_en,
    h.name_ko AS heading_name_ko,
    p.heading_probability,
    p.subheading,
    COALESCE(s.name_en, p.subheading) AS subheading_name_en,
    s.name_ko AS subheading_name_ko,
    p.subheading_probability,
    p.top_k,
    p.created_at AS predicted_at
FROM (
    SELECT
        predictions.*,
        ROW_NUMBER() OVER (
            PARTITION BY declaration_id
            ORDER BY created_at DESC, model_version_id DESC
        ) AS recency
    FROM predictions
) AS p
JOIN declarations AS d ON d.id = p.declaration_id
LEFT JOIN hs_codes AS h ON h.code = p.heading
LEFT JOIN hs_codes AS s ON s.code = p.subheading
WHERE p.recency = 1
"""

# A flag needs a declared code whose heading differs from a confident prediction.
SCREENING_FLAGS = """
CREATE VIEW screening_flags AS
SELECT
    lp.*,
    SUBSTR(lp.declared_hs_code, 1, 4) AS declared_heading,
    policy.min_heading_probability
FROM latest_predictions AS lp
CROSS JOIN screening_policy AS policy
WHERE policy.id = 1
    AND lp.declared_hs_code IS NOT NULL
    AND SUBSTR(lp.declared_hs_code, 1, 4) <> lp.heading
    AND lp.heading_probability >= policy.min_heading_probability
"""


def upgrade() -> None:
    op.create_table(
        "declarations",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("declared_hs_code", sa.String(length=10), nullable=True),
        sa.Column("hs_code", sa.String(length=10), nullable=True),
        sa.Column("image_key", sa.String(length=300), nullable=True),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "reference", name="uq_declarations_source_ref"),
    )
    with op.batch_alter_table("declarations", schema=None) as batch_op:
        batch_op.create_index("ix_declarations_hs_code", ["hs_code"], unique=False)

    op.create_table(
        "hs_codes",
        sa.Column("code", sa.String(length=6), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("name_en", sa.Text(), nullable=True),
        sa.Column("name_ko", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_table(
        "ingest_errors",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ingest_errors", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ingest_errors_source"), ["source"], unique=False
        )

    op.create_table(
        "model_versions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fusion", sa.String(length=20), nullable=False),
        sa.Column("text_encoder", sa.String(length=300), nullable=True),
        sa.Column("image_encoder", sa.String(length=100), nullable=True),
        sa.Column(
            "label_space",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("hs_edition", sa.String(length=40), nullable=False),
        sa.Column(
            "settings",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("weights_key", sa.String(length=300), nullable=False),
        sa.Column("data_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("evaluation_set", sa.String(length=200), nullable=False),
        sa.Column(
            "metrics",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "screening_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("min_heading_probability", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "declaration_changes",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "declaration_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("field", sa.String(length=40), nullable=False),
        sa.Column("old_value", sa.String(length=10), nullable=True),
        sa.Column("new_value", sa.String(length=10), nullable=True),
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["declaration_id"], ["declarations.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("declaration_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_declaration_changes_declaration_id"),
            ["declaration_id"],
            unique=False,
        )

    op.create_table(
        "predictions",
        sa.Column(
            "declaration_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column(
            "model_version_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("heading", sa.String(length=4), nullable=False),
        sa.Column("heading_probability", sa.Float(), nullable=False),
        sa.Column("subheading", sa.String(length=6), nullable=False),
        sa.Column("subheading_probability", sa.Float(), nullable=False),
        sa.Column(
            "top_k",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["declaration_id"], ["declarations.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
        ),
        sa.PrimaryKeyConstraint("declaration_id", "model_version_id"),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_predictions_declaration_created",
            ["declaration_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "scoring_runs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column(
            "model_version_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "scoring_chunks",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "run_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column(
            "declaration_ids",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("scored", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["scoring_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("scoring_chunks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scoring_chunks_run_id"), ["run_id"], unique=False
        )

    op.create_table(
        "scoring_failures",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "run_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column(
            "declaration_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["declaration_id"], ["declarations.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["scoring_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "declaration_id", name="uq_failures_run_decl"),
    )
    with op.batch_alter_table("scoring_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scoring_failures_declaration_id"),
            ["declaration_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_scoring_failures_run_id"), ["run_id"], unique=False
        )

    op.execute(LATEST_PREDICTIONS)
    op.execute(SCREENING_FLAGS)


def downgrade() -> None:
    op.execute("DROP VIEW screening_flags")
    op.execute("DROP VIEW latest_predictions")

    with op.batch_alter_table("scoring_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scoring_failures_run_id"))
        batch_op.drop_index(batch_op.f("ix_scoring_failures_declaration_id"))

    op.drop_table("scoring_failures")
    with op.batch_alter_table("scoring_chunks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scoring_chunks_run_id"))

    op.drop_table("scoring_chunks")
    op.drop_table("scoring_runs")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_declaration_created")

    op.drop_table("predictions")
    with op.batch_alter_table("declaration_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_declaration_changes_declaration_id"))

    op.drop_table("declaration_changes")
    op.drop_table("screening_policy")
    op.drop_table("model_versions")
    with op.batch_alter_table("ingest_errors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_errors_source"))

    op.drop_table("ingest_errors")
    op.drop_table("hs_codes")
    with op.batch_alter_table("declarations", schema=None) as batch_op:
        batch_op.drop_index("ix_declarations_hs_code")

    op.drop_table("declarations")
