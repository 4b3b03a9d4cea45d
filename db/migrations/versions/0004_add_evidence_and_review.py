"""Add prediction evidence, the review threshold, review decisions and indexes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 17:30:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VIEWS = ("screening_flags", "latest_predictions")
"""Dropped in this order, created in reverse, since one reads the other."""

# The newest prediction is found per row by a correlated lookup on
# ix_predictions_latest rather than by a window over every prediction, so a
# query that filters declarations or predictions reads only the rows it needs.
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
    p.created_at AS predicted_at,
    p.evidence,
    p.heading_probability < policy.auto_accept_min_probability AS needs_review,
    (
        d.declared_hs_code IS NOT NULL
        AND SUBSTR(d.declared_hs_code, 1, 4) <> p.heading
        AND p.heading_probability >= policy.min_heading_probability
    ) AS flagged
FROM predictions AS p
JOIN declarations AS d ON d.id = p.declaration_id
LEFT JOIN hs_codes AS h ON h.code = p.heading
LEFT JOIN hs_codes AS s ON s.code = p.subheading
LEFT JOIN screening_policy AS policy ON policy.id = 1
WHERE p.model_version_id = (
    SELECT newer.model_version_id
    FROM predictions AS newer
    WHERE newer.declaration_id = p.declaration_id
    ORDER BY newer.created_at DESC, newer.model_version_id DESC
    LIMIT 1
)
"""

SCREENING_FLAGS = """
CREATE VIEW screening_flags AS
SELECT
    lp.*,
    SUBSTR(lp.declared_hs_code, 1, 4) AS declared_heading,
    policy.min_heading_probability
FROM latest_predictions AS lp
CROSS JOIN screening_policy AS policy
WHERE policy.id = 1 AND lp.flagged
"""

OLD_LATEST_PREDICTIONS = """
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

OLD_SCREENING_FLAGS = """
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

ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    grants = _view_grants()
    for view in VIEWS:
        op.execute(f"DROP VIEW {view}")

    op.add_column(
        "predictions",
        sa.Column(
            "evidence",
            sa.JSON().with_variant(
                postgresql.JSONB(astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
    )
    op.add_column(
        "screening_policy",
        sa.Column(
            "auto_accept_min_probability",
            sa.Float(),
            nullable=False,
            server_default=sa.text("0.9"),
        ),
    )
    op.drop_index("ix_predictions_declaration_created", table_name="predictions")
    op.create_index(
        "ix_predictions_latest",
        "predictions",
        ["declaration_id", "created_at", "model_version_id"],
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    _create_review_decisions()

    op.execute(LATEST_PREDICTIONS)
    op.execute(SCREENING_FLAGS)
    _restore_grants(grants)
    _grant_analyst_review_decisions()


def _grant_analyst_review_decisions() -> None:
    """Let the read-only analyst role of revision 0003 read review outcomes."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    role = bind.scalar(
        sa.text(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = 'hscode_analyst'"
        )
    )
    if role is not None:
        op.execute("GRANT SELECT ON review_decisions TO hscode_analyst")


def _create_review_decisions() -> None:
    op.create_table(
        "review_decisions",
        sa.Column("id", ID_TYPE, nullable=False),
        sa.Column("declaration_id", ID_TYPE, nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=False),
        sa.Column("previous_hs_code", sa.String(length=10), nullable=True),
        sa.Column("decided_hs_code", sa.String(length=10), nullable=True),
        sa.Column("reviewer", sa.String(length=100), nullable=False),
        sa.Column(
            "decided_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("source_file", sa.String(length=500), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["declaration_id"], ["declarations.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_review_decisions_declaration_id", "review_decisions", ["declaration_id"]
    )
    op.create_index(
        "ix_review_decisions_decided_at", "review_decisions", ["decided_at"]
    )


def _view_grants() -> list[tuple[str, str, str]]:
    """Return the PostgreSQL privileges others hold on the views, to grant again.

    Dropping a view drops its grants, for example those of a read-only role.
    """
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return []
    rows = bind.execute(
        sa.text(
            "SELECT table_name, privilege_type, grantee "
            "FROM information_schema.role_table_grants "
            "WHERE table_schema = current_schema() AND table_name IN :views "
            "AND grantee <> current_user"
        ).bindparams(sa.bindparam("views", expanding=True)),
        {"views": list(VIEWS)},
    )
    return [tuple(row) for row in rows]


def _restore_grants(grants: list[tuple[str, str, str]]) -> None:
    preparer = op.get_bind().dialect.identifier_preparer
    for view, privilege, grantee in grants:
        target = "PUBLIC" if grantee == "PUBLIC" else preparer.quote(grantee)
        op.execute(f"GRANT {privilege} ON {view} TO {target}")


def downgrade() -> None:
    grants = _view_grants()
    for view in VIEWS:
        op.execute(f"DROP VIEW {view}")

    op.drop_index("ix_review_decisions_decided_at", table_name="review_decisions")
    op.drop_index("ix_review_decisions_declaration_id", table_name="review_decisions")
    op.drop_table("review_decisions")
    op.drop_index("ix_predictions_created_at", table_name="predictions")
    op.drop_index("ix_predictions_latest", table_name="predictions")
    op.create_index(
        "ix_predictions_declaration_created",
        "predictions",
        ["declaration_id", "created_at"],
    )
    with op.batch_alter_table("screening_policy") as batch_op:
        batch_op.drop_column("auto_accept_min_probability")
    with op.batch_alter_table("predictions") as batch_op:
        batch_op.drop_column("evidence")

    op.execute(OLD_LATEST_PREDICTIONS)
    op.execute(OLD_SCREENING_FLAGS)
    _restore_grants(grants)
