"""Writing predictions and failures: one bulk upsert per chunk."""

from psycopg2.extras import Json, execute_values
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.models import Prediction, ScoringFailure, utc_now


def _insert_for(session: Session, table):
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)


_COLUMNS = (
    "declaration_id", "model_version_id", "heading", "heading_probability",
    "subheading", "subheading_probability", "top_k", "evidence", "created_at",
)
_JSON_COLUMNS = {"top_k", "evidence"}
_POSTGRESQL_UPSERT = (
    f"INSERT INTO predictions ({', '.join(_COLUMNS)}) VALUES %s "
    "ON CONFLICT (declaration_id, model_version_id) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in _COLUMNS[2:])
)


def upsert_predictions(session: Session, rows: list[dict]) -> None:
    """Insert predictions; a row for the same (declaration, version) is replaced."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        _upsert_postgresql(session, rows)
        return
    statement = _insert_for(session, Prediction)
    statement = statement.on_conflict_do_update(
        index_elements=["declaration_id", "model_version_id"],
        set_={
            name: statement.excluded[name]
            for name in (
                "heading", "heading_probability", "subheading",
                "subheading_probability", "top_k", "evidence", "created_at",
            )
        },
    )
    session.execute(statement, rows)


def _upsert_postgresql(session: Session, rows: list[dict]) -> None:
    """Send all rows in one multi-row statement on the session's connection.

    psycopg2 runs an executemany of an upsert one row per round trip, which
    took four times as long per chunk.
    """
    values = [
        tuple(
            Json(row[name]) if name in _JSON_COLUMNS and row[name] is not None
            else row[name]
            for name in _COLUMNS
        )
        for row in rows
    ]
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        execute_values(cursor, _POSTGRESQL_UPSERT, values, page_size=len(values))
    finally:
        cursor.close()


def record_failures(
    session: Session, run_id: int, failures: dict[int, tuple[str, str]], attempts: int
) -> None:
    """Record each failed declaration of a run with its stage, error and attempts."""
    if not failures:
        return
    rows = [
        {"run_id": run_id, "declaration_id": declaration_id, "stage": stage,
         "error": error, "attempts": attempts, "failed_at": utc_now()}
        for declaration_id, (stage, error) in failures.items()
    ]
    statement = _insert_for(session, ScoringFailure)
    statement = statement.on_conflict_do_update(
        index_elements=["run_id", "declaration_id"],
        set_={name: statement.excluded[name]
              for name in ("stage", "error", "attempts", "failed_at")},
    )
    session.execute(statement, rows)
