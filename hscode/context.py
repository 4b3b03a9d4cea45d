"""Settings, database and store for one command, opened once."""

import logging
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import create_db_engine, create_session_factory, migrate
from db.settings import DbSettings, load_db_settings
from db.storage import ObjectStore, create_store
from worker.scoring import ScoringContext
from worker.settings import WorkerSettings, load_worker_settings

logger = logging.getLogger(__name__)


@dataclass
class CommandContext:
    """Settings, database and store of one command; migrates on first use."""

    db: DbSettings
    worker: WorkerSettings

    @cached_property
    def engine(self) -> Engine:
        engine = create_db_engine(self.db)
        migrate(engine)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return create_session_factory(self.engine)

    @cached_property
    def store(self) -> ObjectStore:
        return create_store(self.db)

    @cached_property
    def scoring(self) -> ScoringContext:
        """The worker's scoring context on this command's database and store."""
        from worker.tasks import create_scoring_context

        return create_scoring_context(self.sessions, self.store, self.db, self.worker)


def open_context() -> CommandContext:
    """Read and validate the settings from the environment."""
    return CommandContext(load_db_settings(), load_worker_settings())
