"""The scheduled model refresh, as a Celery task on the `train` queue."""

import logging

from celery import shared_task

from db.engine import create_db_engine, create_session_factory
from db.settings import load_db_settings
from db.storage import create_store
from training.refresh import refresh
from training.settings import load_train_settings

logger = logging.getLogger(__name__)


# Acknowledged on receipt: a refresh runs longer than the broker's visibility
# timeout, and a redelivery would train a second model in parallel.
@shared_task(name="training.tasks.refresh_model", acks_late=False)
def refresh_model() -> dict:
    """Train a candidate on every labelled declaration and decide its promotion."""
    db_settings = load_db_settings()
    sessions = create_session_factory(create_db_engine(db_settings))
    result = refresh(sessions, create_store(db_settings), load_train_settings(),
                     actor="scheduled refresh")
    return {"version": result.version.id, "action": result.decision.action,
            "reason": result.decision.reason}
