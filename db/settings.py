"""Database and object-store settings, read from the environment once."""

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy.engine import make_url

DEFAULT_DATA_DIR = ".hscode"
"""Folder for the SQLite file and local objects in embedded mode."""

SQLITE_FILE = "hscode.db"
OBJECTS_DIR = "objects"


class SettingsError(ValueError):
    """An environment variable contains a value the product cannot use."""


@dataclass(frozen=True)
class DbSettings:
    """Locations of the database, the object store and the data folder."""

    database_url: str
    storage_url: str
    data_dir: Path

    @property
    def embedded(self) -> bool:
        """Whether the database is the local SQLite file."""
        return self.database_url.startswith("sqlite")

    def masked(self) -> dict[str, str]:
        """Return the settings for display, with any password hidden."""
        url = make_url(self.database_url)
        return {
            "database_url": url.render_as_string(hide_password=True),
            "storage_url": self.storage_url,
            "data_dir": str(self.data_dir),
        }


def load_db_settings(environ: dict[str, str] | None = None) -> DbSettings:
    """Read `HSCODE_DATABASE_URL`, `HSCODE_STORAGE_URL` and `HSCODE_DATA_DIR`."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("HSCODE_DATA_DIR") or DEFAULT_DATA_DIR).absolute()

    database_url = env.get("HSCODE_DATABASE_URL") or (
        f"sqlite:///{data_dir / SQLITE_FILE}"
    )
    _check_database_url(database_url)

    storage_url = env.get("HSCODE_STORAGE_URL") or (data_dir / OBJECTS_DIR).as_uri()
    _check_storage_url(storage_url)
    return DbSettings(database_url, storage_url, data_dir)


def _check_database_url(url: str) -> None:
    try:
        backend = make_url(url).get_backend_name()
    except Exception as error:
        raise SettingsError(
            "HSCODE_DATABASE_URL is not a database URL; expected for example "
            "postgresql+psycopg2://user@host:5432/name"
        ) from error
    if backend not in ("postgresql", "sqlite"):
        raise SettingsError(
            f"HSCODE_DATABASE_URL uses {backend!r}; only postgresql and sqlite "
            "are supported"
        )


def _check_storage_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "s3" and parsed.netloc:
        return
    if parsed.scheme == "file" and parsed.path:
        return
    raise SettingsError(
        f"HSCODE_STORAGE_URL {url!r} is invalid; expected s3://bucket[/prefix] "
        "or file:///absolute/folder"
    )
