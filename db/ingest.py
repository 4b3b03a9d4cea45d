"""Loading manifests into `declarations`, streaming, in batches."""

import io
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from botocore.exceptions import ClientError, ParamValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.manifest import (
    ManifestRow,
    RowError,
    read_rows,
    storable_text,
    validate_row,
)
from db.models import Declaration, DeclarationChange, IngestError, utc_now
from db.photos import PhotoError, inspect_photo, photo_extension
from db.storage import ObjectNotFound, ObjectStore, S3Store, create_s3_client, photo_key

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2000
MAX_ERRORS_KEPT = 1000
"""Errors kept in the report for printing; every error is stored in `ingest_errors`."""

_CODE_FIELDS = ("hs_code", "declared_hs_code")


@dataclass
class IngestReport:
    """Counts of one manifest load, with the first errors."""

    path: str
    source: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    """Rows left out by the chapter filter."""
    rejected: int = 0
    photos: int = 0
    errors: list[str] = field(default_factory=list)

    def add_error(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)


@dataclass
class _Batch:
    rows: list[ManifestRow] = field(default_factory=list)
    image_keys: dict[int, str] = field(default_factory=dict)
    errors: list[tuple[int, str | None, str]] = field(default_factory=list)


def ingest_manifest(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    path: Path,
    *,
    source: str | None = None,
    column_map: dict[str, str] | None = None,
    zero_pad: int | None = None,
    chapters: set[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Load a CSV or JSON Lines manifest; bad rows are recorded and skipped.

    A row whose (source, reference) exists changes nothing when identical;
    a changed decided or declared code is updated and the change recorded.
    With `chapters`, only rows whose decided code lies in them are loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    report = IngestReport(str(path), source or path.name)
    loader = _Loader(
        sessions, store, path, report, column_map or {}, zero_pad, chapters
    )

    batch = _Batch()
    try:
        for item in read_rows(path):
            report.rows += 1
            loader.add(batch, item)
            if len(batch.rows) + len(batch.errors) >= batch_size:
                loader.flush(batch)
                batch = _Batch()
                if progress:
                    progress(report.rows)
        loader.flush(batch)
    finally:
        loader.seen.close()
    if progress:
        progress(report.rows)

    logger.info(
        "ingested %s as source %r: %d rows, %d inserted, %d updated, "
        "%d unchanged, %d skipped, %d rejected",
        path, report.source, report.rows, report.inserted, report.updated,
        report.unchanged, report.skipped, report.rejected,
    )
    return report


class _Loader:
    """Validates rows, stores their photos and writes batches."""

    def __init__(
        self, sessions, store, path, report, column_map, zero_pad, chapters
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.folder = path.parent.resolve()
        self.report = report
        self.column_map = column_map
        self.zero_pad = zero_pad
        self.chapters = chapters
        self.seen = SeenReferences()
        self.source_was_empty: bool | None = None

    def add(self, batch: _Batch, item) -> None:
        if isinstance(item, RowError):
            batch.errors.append((item.line, None, str(item)))
            return
        try:
            row = validate_row(item, self.column_map, self.zero_pad)
            if self.chapters and (row.hs_code or "")[:2] not in self.chapters:
                self.report.skipped += 1
                return
            self._check_duplicate(row)
            if row.image:
                batch.image_keys[row.line] = self._store_photo(row.image)
        except RowError as error:
            reference = item.values.get(self.column_map.get("reference", "reference"))
            batch.errors.append((item.line, _short(reference), str(error)))
            return
        except (PhotoError, ObjectNotFound, OSError) as error:
            batch.errors.append((row.line, row.reference,
                                 f"line {row.line}: photo {row.image!r}: {error}"))
            return
        # A reference counts as taken only once its row is accepted.
        self.seen.add(row.reference, row.line)
        batch.rows.append(row)

    def _check_duplicate(self, row: ManifestRow) -> None:
        first = self.seen.first_line(row.reference)
        if first is not None:
            raise RowError(
                f"line {row.line}: duplicate reference {row.reference!r}, "
                f"first on line {first}",
                row.line,
            )

    def _store_photo(self, image: str) -> str:
        data = self._read_photo(image)
        info = inspect_photo(data)
        key = photo_key(data, photo_extension(info))
        if not self.store.exists(key):
            self.store.put(key, data)
        self.report.photos += 1
        return key

    def _read_photo(self, image: str) -> bytes:
        if image.startswith("s3://"):
            return _read_s3_object(self.store, image)

        return read_manifest_photo(self.folder, image)

    def flush(self, batch: _Batch) -> None:
        self.seen.save()
        with self.sessions() as session, session.begin():
            self._write_rows(session, batch)
            for line, reference, message in batch.errors:
                self.report.add_error(message)
                session.add(IngestError(source=self.report.source,
                                        path=self.report.path, line=line,
                                        reference=reference, reason=message))

    def _write_rows(self, session: Session, batch: _Batch) -> None:
        if not batch.rows:
            return
        source = self.report.source
        if self.source_was_empty is None:
            self.source_was_empty = session.scalar(
                select(Declaration.id).where(Declaration.source == source).limit(1)
            ) is None
        existing = {}
        if not self.source_was_empty:
            # A source that was empty when the ingest began holds only this
            # file's rows, whose references are already checked unique.
            references = [row.reference for row in batch.rows]
            existing = {
                d.reference: d
                for d in session.scalars(
                    select(Declaration).where(
                        Declaration.source == source,
                        Declaration.reference.in_(references),
                    )
                )
            }
        new_rows = []
        for row in batch.rows:
            found = existing.get(row.reference)
            if found is None:
                new_rows.append(_declaration_values(source, row, batch))
            else:
                self._update(session, found, row, batch)
        if new_rows:
            insert_declarations(session, new_rows)
            self.report.inserted += len(new_rows)

    def _update(self, session, found: Declaration, row, batch) -> None:
        changes = {
            name: getattr(row, name)
            for name in _CODE_FIELDS
            if getattr(row, name) != getattr(found, name)
        }
        if not changes:
            self.report.unchanged += 1
            return

        # Read the old values first: the ORM update below also sets them on
        # `found`, since it synchronizes objects already in the session.
        old_values = {name: getattr(found, name) for name in changes}
        session.execute(
            update(Declaration).where(Declaration.id == found.id).values(**changes)
        )
        origin = f"{self.report.path} line {row.line}"
        for name, value in changes.items():
            session.add(DeclarationChange(
                declaration_id=found.id, field=name,
                old_value=old_values[name], new_value=value, origin=origin,
            ))
        self.report.updated += 1


class SeenReferences:
    """The references accepted so far in one file, with the line of each.

    They live in a private temporary SQLite database on disk, which SQLite
    deletes on close, so memory stays flat however many rows the file has;
    only the current batch's references are held in a dict until `save`.
    """

    def __init__(self) -> None:
        # An empty file name makes SQLite create a private on-disk database.
        self._db = sqlite3.connect("")
        self._db.execute(
            "CREATE TABLE seen (reference TEXT PRIMARY KEY, line INTEGER) "
            "WITHOUT ROWID"
        )
        self._pending: dict[str, int] = {}

    def first_line(self, reference: str) -> int | None:
        """Return the line that first used a reference, or None if it is new."""
        line = self._pending.get(reference)
        if line is not None:
            return line
        found = self._db.execute(
            "SELECT line FROM seen WHERE reference = ?", (reference,)
        ).fetchone()
        return None if found is None else found[0]

    def add(self, reference: str, line: int) -> None:
        """Remember a reference accepted on a line."""
        self._pending[reference] = line

    def save(self) -> None:
        """Move the current batch's references to the on-disk table."""
        if not self._pending:
            return
        with self._db:
            self._db.executemany(
                "INSERT INTO seen (reference, line) VALUES (?, ?)",
                self._pending.items(),
            )
        self._pending.clear()

    def close(self) -> None:
        """Delete the table and its file."""
        self._db.close()


def read_manifest_photo(folder: Path, image: str) -> bytes:
    """Read a photo named relative to a manifest's folder, never outside it."""
    folder = folder.resolve()
    path = (folder / image).resolve()
    if not path.is_relative_to(folder):
        raise PhotoError("path is outside the manifest's folder")
    if not path.is_file():
        raise PhotoError("file not found")
    return path.read_bytes()


_COPY_COLUMNS = (
    "source", "reference", "description", "hs_code", "declared_hs_code",
    "image_key", "attributes", "received_at",
)
# COPY's text format ends a field at a tab and a row at a newline, and reads
# a backslash as an escape, so these four are written as escapes.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def insert_declarations(session: Session, rows: list[dict]) -> None:
    """Insert new declarations; on PostgreSQL with one COPY, else one INSERT.

    COPY skips the per-row statement parameters of a multi-row INSERT, which
    made up most of an ingest's time.
    """
    if session.bind.dialect.name != "postgresql":
        session.execute(insert(Declaration), rows)
        return
    received_at = utc_now().isoformat()
    lines = []
    for row in rows:
        attributes = row["attributes"]
        values = {**row, "received_at": received_at, "attributes": (
            json.dumps(attributes, ensure_ascii=False) if attributes else "{}"
        )}
        lines.append("\t".join(
            "\\N" if values[name] is None else values[name].translate(_COPY_ESCAPES)
            for name in _COPY_COLUMNS
        ))
    buffer = io.StringIO("\n".join(lines) + "\n")
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(
            f"COPY declarations ({', '.join(_COPY_COLUMNS)}) FROM STDIN", buffer
        )
    finally:
        cursor.close()


def _declaration_values(source: str, row: ManifestRow, batch: _Batch) -> dict:
    return {
        "source": source,
        "reference": row.reference,
        "description": row.description,
        "hs_code": row.hs_code,
        "declared_hs_code": row.declared_hs_code,
        "image_key": batch.image_keys.get(row.line),
        "attributes": row.attributes,
    }


# S3 error codes that concern one object, so only its row is rejected; other
# errors, such as an unreachable endpoint, stop the ingest.
_S3_OBJECT_ERRORS = {
    "NoSuchKey": "object not found",
    "404": "object not found",
    "NoSuchBucket": "bucket not found",
    "AccessDenied": "access denied",
    "403": "access denied",
}


def _read_s3_object(store: ObjectStore, url: str) -> bytes:
    parsed = urlparse(url)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise PhotoError("invalid S3 URL: expected s3://bucket/key")

    client = store.client if isinstance(store, S3Store) else create_s3_client()
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ParamValidationError:
        raise PhotoError("invalid S3 URL: invalid bucket name or key") from None
    except ClientError as error:
        reason = _S3_OBJECT_ERRORS.get(error.response["Error"]["Code"])
        if reason is None:
            raise
        raise PhotoError(f"S3 {reason}") from None
    return response["Body"].read()


def _short(value) -> str | None:
    return None if value is None else storable_text(str(value))[:200]
