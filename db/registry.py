"""The model registry in `model_versions`: candidates, the champion, retired ones."""

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ModelVersion, utc_now

CANDIDATE, CHAMPION, RETIRED = "candidate", "champion", "retired"


def get_champion(session: Session) -> ModelVersion | None:
    """Return the model version that scores declarations now, if any."""
    return session.scalar(select(ModelVersion).where(ModelVersion.status == CHAMPION))


def promote(session: Session, version: ModelVersion) -> None:
    """Make a version the champion and retire the previous one."""
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == CHAMPION, ModelVersion.id != version.id)
        .values(status=RETIRED)
    )
    version.status = CHAMPION
    version.promoted_at = utc_now()
