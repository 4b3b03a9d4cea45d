"""`hscode purge`: delete a source's declarations, predictions and photos."""

import logging
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Declaration, IngestError, Prediction
from db.storage import ObjectStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeReport:
    """Counts of a purge: rows deleted, and photos kept for other declarations."""

    declarations: int
    predictions: int
    photos_deleted: int
    photos_kept: int


def count_source(session: Session, source: str) -> tuple[int, int]:
    """Return the numbers of declarations and predictions of a source."""
    ids = select(Declaration.id).where(Declaration.source == source)
    declarations = session.scalar(
        select(func.count())
        .select_from(Declaration)
        .where(Declaration.source == source)
    )
    predictions = session.scalar(
        select(func.count())
        .select_from(Prediction)
        .where(Prediction.declaration_id.in_(ids))
    )
    return declarations, predictions


def purge_source(
    sessions: sessionmaker[Session], store: ObjectStore, source: str
) -> PurgeReport:
    """Delete a source's rows, then the photos no other declaration uses.

    Scoring failures, code changes, review decisions and evaluation-set
    memberships of the declarations go with them (ON DELETE CASCADE).
    """
    with sessions() as session, session.begin():
        declarations, predictions = count_source(session, source)
        ids = select(Declaration.id).where(Declaration.source == source)
        keys = set(
            session.scalars(
                select(Declaration.image_key)
                .where(Declaration.source == source, Declaration.image_key.is_not(None))
                .distinct()
            )
        )
        session.execute(delete(Prediction).where(Prediction.declaration_id.in_(ids)))
        session.execute(delete(Declaration).where(Declaration.source == source))
        session.execute(delete(IngestError).where(IngestError.source == source))

    # Photos are content-addressed, so another source may share a key.
    with sessions() as session:
        shared = (
            set(
                session.scalars(
                    select(Declaration.image_key)
                    .where(Declaration.image_key.in_(sorted(keys)))
                    .distinct()
                )
            )
            if keys
            else set()
        )
    for key in sorted(keys - shared):
        store.delete(key)
    logger.info(
        "purged source %r: %d declarations, %d predictions, %d photos",
        source,
        declarations,
        predictions,
        len(keys - shared),
    )
    return PurgeReport(declarations, predictions, len(keys - shared), len(shared))
