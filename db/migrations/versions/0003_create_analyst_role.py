"""Create the read-only analyst role `hscode_analyst`.

The role may read the views `latest_predictions` and `screening_flags` and
nothing else. It cannot log in; grant it to a login role, or give it LOGIN:

    GRANT hscode_analyst TO alice;
    ALTER ROLE hscode_analyst LOGIN PASSWORD '...';

Roles belong to the whole PostgreSQL server, not to one database, so the
role may already exist from another database's migration; the grants are
per database. SQLite has no roles: there this revision does nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-11 10:00:00.000000
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ROLE = "hscode_analyst"
VIEWS = ("latest_predictions", "screening_flags")

# The EXCEPTION clause covers a second database migrating at the same moment,
# which the NOT EXISTS test alone would let fail with duplicate_object.
_CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{ROLE}') THEN
        CREATE ROLE {ROLE} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_CREATE_ROLE)
    # Start from nothing in this database, so a role that existed before
    # keeps no privilege granted here by hand.
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ROLE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ROLE}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    # A view reads its tables with its owner's rights, so SELECT on the view
    # is enough and the tables stay closed to the role.
    op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The role stays: other databases on the server may still grant it rights.
    op.execute(f"REVOKE SELECT ON {', '.join(VIEWS)} FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
