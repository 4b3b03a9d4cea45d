"""Tests for db.engine.migrate on PostgreSQL and SQLite, and the SQL views."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text, update
from sqlalchemy.orm import Session

from db.engine import (
    MIGRATIONS_DIR,
    DEFAULT_SCREENING_MIN_PROBABILITY,
    create_db_engine,
    migrate,
)
from db.models import (
    Base,
    Declaration,
    HsCode,
    ModelVersion,
    Prediction,
    ScreeningPolicy,
)
from db.settings import load_db_settings
from tests.services import create_database, drop_database

TABLES = set(Base.metadata.tables) | {"alembic_version"}
VIEWS = {"latest_predictions", "screening_flags"}
BACKENDS = ["postgresql", "sqlite"]


@pytest.fixture(scope="module")
def postgresql_engine(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """Yield an engine on a database of its own, migrated once."""
    url = create_database(postgres_admin_url)
    env = {
        "HSCODE_DATABASE_URL": url,
        "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("pg-data")),
    }
    engine = create_db_engine(load_db_settings(env))
    migrate(engine)
    yield engine
    engine.dispose()
    drop_database(url)


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Yield an engine on the embedded SQLite file of a fresh data folder."""
    env = {"HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("sqlite-data"))}
    engine = create_db_engine(load_db_settings(env))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(f"{request.param}_engine")


def test_migrate_creates_tables(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) == TABLES


def test_migrate_creates_views(engine: Engine) -> None:
    assert set(inspect(engine).get_view_names()) == VIEWS


def test_migrate_matches_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_migrate_records_revision(engine: Engine) -> None:
    with engine.connect() as connection:
        revision = connection.scalar(text("SELECT version_num FROM alembic_version"))

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert revision == ScriptDirectory.from_config(config).get_current_head()


def test_migrate_loads_code_names(engine: Engine) -> None:
    with Session(engine) as session:
        heading = session.get(HsCode, "8471")
        chapter = session.get(HsCode, "84")
        subheading = session.get(HsCode, "847130")

    assert heading is not None
    assert heading.level == 4
    assert heading.name_en.startswith("Automatic data processing machines")
    assert heading.name_ko.startswith("자동자료처리기계")
    assert chapter is not None
    assert chapter.level == 2
    assert subheading is not None
    assert subheading.level == 6


def test_migrate_code_levels(engine: Engine) -> None:
    with Session(engine) as session:
        levels = set(session.scalars(select(HsCode.level).distinct()))
        wrong = session.scalar(
            select(func.count())
            .select_from(HsCode)
            .where(func.length(HsCode.code) != HsCode.level)
        )

    assert levels == {2, 4, 6}
    assert wrong == 0


def test_migrate_seeds_screening_policy(engine: Engine) -> None:
    with Session(engine) as session:
        policies = session.scalars(select(ScreeningPolicy)).all()

    assert len(policies) == 1
    assert policies[0].id == 1
    assert policies[0].min_heading_probability == DEFAULT_SCREENING_MIN_PROBABILITY


def test_migrate_twice_harmless(engine: Engine) -> None:
    with Session(engine) as session:
        codes_before = session.scalar(select(func.count()).select_from(HsCode))

    migrate(engine)

    with Session(engine) as session:
        codes_after = session.scalar(select(func.count()).select_from(HsCode))
        policies = session.scalar(select(func.count()).select_from(ScreeningPolicy))
    assert codes_after == codes_before
    assert policies == 1
    assert set(inspect(engine).get_view_names()) == VIEWS


def test_migrate_keeps_changed_policy(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(ScreeningPolicy).values(min_heading_probability=0.7))

    try:
        migrate(engine)
        with Session(engine) as session:
            policy = session.get(ScreeningPolicy, 1)
        assert policy is not None
        assert policy.min_heading_probability == 0.7
    finally:
        with Session(engine) as session, session.begin():
            session.execute(
                update(ScreeningPolicy).values(
                    min_heading_probability=DEFAULT_SCREENING_MIN_PROBABILITY
                )
            )


def test_migrate_embedded_default_file(embedded_env: Path) -> None:
    settings = load_db_settings()
    engine = create_db_engine(settings)

    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()

    assert settings.embedded
    assert (embedded_env / "hscode.db").is_file()
    assert tables == TABLES


def add_model_version(session: Session) -> ModelVersion:
    version = ModelVersion(
        fusion="text",
        text_encoder="all-MiniLM-L6-v2",
        image_encoder=None,
        label_space={"headings": ["8471", "9401"]},
        hs_edition="HS2022",
        settings={},
        weights_key=f"models/{uuid.uuid4().hex}.tar",
        data_fingerprint="0" * 64,
        evaluation_set="test",
        metrics={},
    )
    session.add(version)
    session.flush()
    return version


def add_declaration(
    session: Session, source: str, reference: str, declared: str | None
) -> int:
    declaration = Declaration(
        source=source,
        reference=reference,
        description="Office chair",
        declared_hs_code=declared,
        hs_code=None,
        attributes={},
    )
    session.add(declaration)
    session.flush()
    return declaration.id


def add_prediction(
    session: Session,
    declaration_id: int,
    version: ModelVersion,
    heading: str,
    probability: float,
    created_at: datetime | None = None,
) -> None:
    session.add(
        Prediction(
            declaration_id=declaration_id,
            model_version_id=version.id,
            heading=heading,
            heading_probability=probability,
            subheading=f"{heading}30",
            subheading_probability=probability / 2,
            top_k=[{"heading": heading, "probability": probability}],
            created_at=created_at or datetime.now(UTC),
        )
    )


@pytest.fixture
def screened(engine: Engine) -> tuple[str, dict[str, int]]:
    """Add declarations with predictions; return their source and ids."""
    source = f"screening-{uuid.uuid4().hex[:12]}"
    earlier = datetime.now(UTC) - timedelta(days=1)
    with Session(engine) as session, session.begin():
        version = add_model_version(session)
        newer = add_model_version(session)
        ids = {
            "above": add_declaration(session, source, "above", "9401.71"),
            "below": add_declaration(session, source, "below", "940171"),
            "agrees": add_declaration(session, source, "agrees", "8471300000"),
            "undeclared": add_declaration(session, source, "undeclared", None),
            "superseded": add_declaration(session, source, "superseded", "940171"),
        }
        add_prediction(session, ids["above"], version, "8471", 0.95)
        add_prediction(session, ids["below"], version, "8471", 0.5)
        add_prediction(session, ids["agrees"], version, "8471", 0.99)
        add_prediction(session, ids["undeclared"], version, "8471", 0.99)
        # Only the newest prediction counts, so an older confident one is
        # not flagged.
        add_prediction(session, ids["superseded"], version, "8471", 0.99, earlier)
        add_prediction(session, ids["superseded"], newer, "8471", 0.3)
    return source, ids


def flagged_ids(engine: Engine, source: str) -> set[int]:
    query = text("SELECT declaration_id FROM screening_flags WHERE source = :source")
    with engine.connect() as connection:
        return set(connection.scalars(query, {"source": source}))


def test_screening_flags_confident_disagreement(
    engine: Engine, screened: tuple[str, dict[str, int]]
) -> None:
    source, ids = screened

    assert ids["above"] in flagged_ids(engine, source)


def test_screening_flags_skip_unconfident(
    engine: Engine, screened: tuple[str, dict[str, int]]
) -> None:
    source, ids = screened

    assert ids["below"] not in flagged_ids(engine, source)


def test_screening_flags_only_disagreement(
    engine: Engine, screened: tuple[str, dict[str, int]]
) -> None:
    source, ids = screened

    assert flagged_ids(engine, source) == {ids["above"]}


def test_screening_flags_columns(
    engine: Engine, screened: tuple[str, dict[str, int]]
) -> None:
    source, ids = screened
    query = text(
        "SELECT declared_heading, heading, min_heading_probability, heading_name_en"
        " FROM screening_flags WHERE declaration_id = :id"
    )

    with engine.connect() as connection:
        row = connection.execute(query, {"id": ids["above"]}).one()

    assert row.declared_heading == "9401"
    assert row.heading == "8471"
    assert row.min_heading_probability == DEFAULT_SCREENING_MIN_PROBABILITY
    assert row.heading_name_en.startswith("Automatic data processing machines")


def test_screening_flags_follow_policy(
    engine: Engine, screened: tuple[str, dict[str, int]]
) -> None:
    source, ids = screened
    with Session(engine) as session, session.begin():
        session.execute(update(ScreeningPolicy).values(min_heading_probability=0.4))

    try:
        flagged = flagged_ids(engine, source)
    finally:
        with Session(engine) as session, session.begin():
            session.execute(
                update(ScreeningPolicy).values(
                    min_heading_probability=DEFAULT_SCREENING_MIN_PROBABILITY
                )
            )

    assert flagged == {ids["above"], ids["below"]}


def test_latest_predictions_newest_wins(
    engine: Engine, screened: tuple[str, dict[str, int]]
) -> None:
    _, ids = screened
    query = text(
        "SELECT heading_probability, heading_name_ko FROM latest_predictions"
        " WHERE declaration_id = :id"
    )

    with engine.connect() as connection:
        rows = connection.execute(query, {"id": ids["superseded"]}).all()

    assert len(rows) == 1
    assert rows[0].heading_probability == 0.3
    assert rows[0].heading_name_ko.startswith("자동자료처리기계")
