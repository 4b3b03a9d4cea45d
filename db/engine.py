"""Database engine, sessions and schema migrations."""

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import HsCode, ScreeningPolicy
from db.nomenclature import load_code_names
from db.settings import DbSettings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

DEFAULT_SCREENING_MIN_PROBABILITY = 0.9
"""Heading probability above which a disagreement with the declared code is flagged."""


def create_db_engine(settings: DbSettings) -> Engine:
    """Create the engine; for SQLite, create its folder and enforce foreign keys."""
    if not settings.embedded:
        return create_engine(settings.database_url, pool_pre_ping=True)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database_url, connect_args={"timeout": 60})
    event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision and load the code names."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    with Session(engine) as session, session.begin():
        _seed_code_names(session)
        _seed_screening_policy(session)


def _seed_code_names(session: Session) -> None:
    if session.scalar(select(func.count()).select_from(HsCode)):
        return
    names = load_code_names()
    session.add_all(
        HsCode(code=n.code, level=n.level, name_en=n.name_en, name_ko=n.name_ko)
        for n in names.values()
    )
    logger.info("loaded %d nomenclature names into hs_codes", len(names))


def _seed_screening_policy(session: Session) -> None:
    if session.get(ScreeningPolicy, 1) is None:
        session.add(
            ScreeningPolicy(
                id=1, min_heading_probability=DEFAULT_SCREENING_MIN_PROBABILITY
            )
        )
