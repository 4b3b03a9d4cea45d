"""The documented analyst queries on 100,000 declarations read no full table of predictions."""

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from db.engine import create_db_engine, migrate
from db.models import ModelVersion
from db.settings import load_db_settings
from tests.services import create_database, drop_database

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
ROWS = 100_000
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)

DECLARATIONS = """
INSERT INTO declarations
    (source, reference, description, declared_hs_code, attributes, received_at)
SELECT 'source-' || (i % 20), 'R' || i, 'goods ' || i,
       CASE WHEN i % 3 = 0 THEN '8471300000' ELSE '8517120000' END,
       '{}'::jsonb, now() - (i % 730) * interval '1 day'
FROM generate_series(1, :rows) AS i
"""

PREDICTIONS = """
INSERT INTO predictions
    (declaration_id, model_version_id, heading, heading_probability,
     subheading, subheading_probability, top_k, created_at)
SELECT d.id, :version,
       CASE WHEN d.id % 2 = 0 THEN '8471' ELSE '8517' END,
       0.5 + (d.id % 50) / 100.0,
       CASE WHEN d.id % 2 = 0 THEN '847130' ELSE '851712' END,
       0.4 + (d.id % 50) / 100.0,
       '[]'::jsonb, now() - (d.id % 730) * interval '1 day'
FROM declarations AS d
"""

REVIEWS = """
INSERT INTO review_decisions
    (declaration_id, decision, decided_hs_code, reviewer, decided_at, applied_at)
SELECT id, 'accept', '847130', 'kim', now() - (id % 730) * interval '1 day', now()
FROM declarations WHERE id % 50 = 0
"""


def documented_queries() -> list[str]:
    """Return the SELECT queries of the example section of docs/sql.md."""
    section = DOCS.read_text().split("## Example queries", 1)[1]
    return [block.strip().rstrip(";") for block in SQL_BLOCK.findall(section)]


@pytest.fixture(scope="module")
def filled_engine(postgres_admin_url: str, tmp_path_factory) -> Iterator[Engine]:
    """Yield a migrated PostgreSQL database with 100,000 scored declarations."""
    url = create_database(postgres_admin_url)
    env = {
        "HSCODE_DATABASE_URL": url,
        "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("sql-data")),
    }
    engine = create_db_engine(load_db_settings(env))
    migrate(engine)

    with Session(engine) as session, session.begin():
        version = ModelVersion(
            fusion="text",
            text_encoder="minilm",
            image_encoder=None,
            label_space={},
            hs_edition="HS2022",
            settings={},
            weights_key=f"models/{uuid.uuid4().hex}.tar",
            data_fingerprint="0" * 64,
            evaluation_set="synthetic",
            metrics={},
            status="champion",
        )
        session.add(version)
        session.flush()
        session.execute(text(DECLARATIONS), {"rows": ROWS})
        session.execute(text(PREDICTIONS), {"version": version.id})
        session.execute(text(REVIEWS))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    yield engine
    engine.dispose()
    drop_database(url)


def explain(engine: Engine, query: str) -> str:
    with engine.connect() as connection:
        rows = connection.execute(text(f"EXPLAIN {query}")).scalars().all()
    return "\n".join(rows)


def test_docs_list_example_queries() -> None:
    assert len(documented_queries()) >= 3


@pytest.mark.parametrize("number", range(len(documented_queries())))
def test_documented_query_skips_full_prediction_scan(
    filled_engine: Engine, number: int
) -> None:
    plan = explain(filled_engine, documented_queries()[number])

    assert "Seq Scan on predictions" not in plan, plan


@pytest.mark.parametrize("number", range(len(documented_queries())))
def test_documented_query_runs(filled_engine: Engine, number: int) -> None:
    with filled_engine.connect() as connection:
        rows = connection.execute(text(documented_queries()[number])).all()

    assert rows


def test_latest_predictions_one_row_per_declaration(filled_engine: Engine) -> None:
    query = "SELECT COUNT(*) FROM latest_predictions"
    with filled_engine.connect() as connection:
        assert connection.scalar(text(query)) == ROWS
