"""Hostile input on both sides: manifest rows at ingest, stored rows at scoring.

The scoring cases are written straight into `declarations` and the store,
bypassing ingest's checks, and scored in one chunk next to good rows.
"""

import io
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DataError, IntegrityError

from db.ingest import ingest_manifest
from db.models import Declaration, IngestError, ScoringFailure, ScoringRun
from db.storage import photo_key
from hscode.cli import main
from hscode.context import CommandContext, open_context
from hscode.scoring import score
from tests.reliability.conftest import environment, outcome, train_model
from tests.services import (
    S3_ACCESS_KEY,
    S3_REGION,
    S3_SECRET_KEY,
    create_database,
    drop_database,
)
from worker.runs import unresolved_failures

SQL_TEXT = "laptop'); DROP TABLE declarations; --"
MEGABYTE_TEXT = ("portable computer " * 60_000)[:1_000_000]


def image_bytes(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    """Return an image of one colour in a mode and format."""
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """Return the first two thirds of a JPEG of random noise."""
    pixels = random.Random(0).randbytes(96 * 96 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (96, 96), pixels).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) * 2 // 3]


# Stored photo bytes per case; None means a valid key with no object behind it.
PHOTOS: dict[str, bytes | None] = {
    "photo-missing": None,
    "photo-truncated": truncated_jpeg(),
    "photo-garbage": b"this is not an image",
    "photo-zero-bytes": b"",
    "photo-png-alpha": image_bytes("RGBA", (32, 32), "PNG"),
    "photo-cmyk": image_bytes("CMYK", (32, 32), "JPEG"),
    "photo-50-megapixel": image_bytes("L", (10_000, 5_000), "JPEG"),
}
# (reference, description, declared code, expected failure or None if scored).
CASES: list[tuple[str, str, str | None, str | None]] = [
    ("good", "Portable automatic data processing machine", "8471300000", None),
    ("empty", "", None, None),
    ("whitespace", " \t \n ", None, None),
    ("megabyte", MEGABYTE_TEXT, None, None),
    ("replaced-utf8", "laptop \ufffd\ufffd computer", None, None),
    ("control", "Lap\x07top \x1b[31mbag\x7f", None, None),
    ("sql", SQL_TEXT, None, None),
    ("code-short", "Mobile phone", "8517", None),
    ("code-letters", "Mobile phone", "85AB1300", None),
    ("photo-traversal", "Monitor", None, "not a content-addressed photo key"),
    ("photo-missing", "Monitor", None, "not found"),
    ("photo-truncated", "Monitor", None, "truncated or corrupt JPEG"),
    ("photo-garbage", "Monitor", None, "not an image"),
    ("photo-zero-bytes", "Monitor", None, "empty file"),
    ("photo-png-alpha", "Monitor", None, None),
    ("photo-cmyk", "Monitor", None, None),
    ("photo-50-megapixel", "Monitor", None, "exceeds the limit"),
]
SOURCE = "hostile"


@pytest.fixture(scope="module")
def env(postgres_admin_url, s3_server, storage_bucket, tmp_path_factory):
    """A database of the module's own, the moto bucket, and no broker."""
    url = create_database(postgres_admin_url)
    values = {
        "HSCODE_DATABASE_URL": url,
        "HSCODE_BROKER_URL": "",
        "HSCODE_STORAGE_URL": f"s3://{storage_bucket}",
        "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("bad-input-data")),
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
    }
    try:
        with environment(values):
            yield values
    finally:
        drop_database(url)


@pytest.fixture(scope="module")
def ctx(env) -> CommandContext:
    """Open a command context on the module's services."""
    return open_context()


@pytest.fixture(scope="module")
def version_id(ctx, tmp_path_factory) -> int:
    """Train the module's weighted model, which reads photos when scoring."""
    return train_model(ctx, tmp_path_factory.mktemp("train"), "weighted").id


def store_photo(ctx: CommandContext, reference: str) -> str | None:
    """Put a case's photo into the store; return its key, or None without one."""
    if reference == "photo-traversal":
        return "../../etc/passwd"
    if reference not in PHOTOS:
        return None
    data = PHOTOS[reference]
    if data is None:
        return photo_key(reference.encode(), ".jpg")
    key = photo_key(data, ".jpg")
    ctx.store.put(key, data)
    return key


@pytest.fixture(scope="module")
def hostile_run(ctx, version_id) -> Iterator[dict]:
    """Insert every case into one source and score it in one chunk."""
    rows = [
        {
            "source": SOURCE,
            "reference": reference,
            "description": description,
            "declared_hs_code": declared,
            "hs_code": None,
            "attributes": {},
            "image_key": store_photo(ctx, reference),
        }
        for reference, description, declared, _ in CASES
    ]
    with ctx.sessions() as session, session.begin():
        session.execute(insert(Declaration), rows)
    progress = score(ctx, source=SOURCE, rescore=False, resume=None, wait=True)
    yield {"progress": progress, "ids": declaration_ids(ctx, SOURCE)}


def declaration_ids(ctx: CommandContext, source: str) -> dict[str, int]:
    """Return the declaration id of each reference of a source."""
    with ctx.sessions() as session:
        return dict(
            session.execute(
                select(Declaration.reference, Declaration.id).where(
                    Declaration.source == source
                )
            ).all()
        )


def failure_of(ctx: CommandContext, run_id: int, declaration_id: int):
    """Return a declaration's failure in a run, or None if it was scored."""
    with ctx.sessions() as session:
        return session.scalar(
            select(ScoringFailure).where(
                ScoringFailure.run_id == run_id,
                ScoringFailure.declaration_id == declaration_id,
            )
        )


def test_hostile_chunk_is_one_chunk(ctx, hostile_run) -> None:
    with ctx.sessions() as session:
        run = session.get(ScoringRun, hostile_run["progress"].run_id)

    assert run.chunk_count == 1


@pytest.mark.parametrize(
    ("reference", "expected"),
    [(reference, expected) for reference, _, _, expected in CASES],
)
def test_hostile_row_outcome(ctx, hostile_run, reference, expected) -> None:
    run_id = hostile_run["progress"].run_id
    failure = failure_of(ctx, run_id, hostile_run["ids"][reference])

    if expected is None:
        assert failure is None
    else:
        assert expected in failure.error


def test_hostile_failures_counted(hostile_run) -> None:
    expected = sum(1 for case in CASES if case[3] is not None)

    assert hostile_run["progress"].failed == expected


def test_hostile_rest_of_chunk_scored(ctx, hostile_run, version_id) -> None:
    result = outcome(ctx.sessions, SOURCE, version_id)
    expected = sum(1 for case in CASES if case[3] is None)

    assert result.scored == expected


def test_hostile_sql_text_leaves_table(ctx, hostile_run) -> None:
    with ctx.sessions() as session:
        count = session.scalar(select(func.count()).select_from(Declaration))

    assert count >= len(CASES)


def test_hostile_screening_view_reads_odd_codes(ctx, hostile_run) -> None:
    query = text(
        "SELECT declared_heading FROM screening_flags JOIN declarations d "
        "ON d.id = screening_flags.declaration_id WHERE d.reference = "
        "'code-short' OR d.reference = 'code-letters'"
    )
    with ctx.engine.connect() as connection:
        headings = set(connection.execute(query).scalars())

    assert headings <= {"8517", "85AB"}


def test_status_lists_latest_failures(ctx, hostile_run, capsys) -> None:
    missing = hostile_run["ids"]["photo-50-megapixel"]

    status = main(["status"])
    output = capsys.readouterr().out

    assert status == 0
    assert (
        f"declaration {missing} (run {hostile_run['progress'].run_id}, photo" in output
    )


def test_retry_failed_scores_fixed_photo(ctx, hostile_run, version_id) -> None:
    ctx.store.put(store_photo(ctx, "photo-missing"), PHOTOS["photo-cmyk"])
    failed = hostile_run["progress"].failed

    retried = score(
        ctx, source=SOURCE, rescore=False, resume=None, wait=True, retry_failed=True
    )
    again = score(
        ctx, source=SOURCE, rescore=False, resume=None, wait=True, retry_failed=True
    )

    assert retried.total == failed
    assert retried.scored == 1
    assert again.total == failed - 1


def test_invalid_utf8_refused_by_database(ctx) -> None:
    statement = text(
        "INSERT INTO declarations (source, reference, description, attributes, "
        "received_at) VALUES ('raw', 'bad-utf8', "
        "convert_from('\\xff41'::bytea, 'UTF8'), '{}', now())"
    )

    with pytest.raises(DataError, match="invalid byte sequence"):
        with ctx.engine.begin() as connection:
            connection.execute(statement)


def test_code_too_long_refused_by_database(ctx) -> None:
    row = {
        "source": "raw",
        "reference": "long-code",
        "description": "Phone",
        "declared_hs_code": "85171300001",
        "attributes": {},
    }

    with pytest.raises(DataError, match="too long"):
        with ctx.sessions() as session, session.begin():
            session.execute(insert(Declaration), [row])


def test_duplicate_reference_refused_by_database(ctx) -> None:
    row = {
        "source": "raw-dup",
        "reference": "R1",
        "description": "Phone",
        "attributes": {},
    }

    with pytest.raises(IntegrityError, match="uq_declarations_source_ref"):
        with ctx.sessions() as session, session.begin():
            session.execute(insert(Declaration), [row, dict(row)])


def write_manifest_bytes(folder: Path, lines: list[bytes]) -> Path:
    """Write a CSV manifest from raw lines, so a test can put any byte in it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    path.write_bytes(b"reference,description,hs_code,image\n" + b"".join(lines))
    return path


def test_ingest_50_megapixel_photo_rejected(ctx, tmp_path) -> None:
    (tmp_path / "big.jpg").write_bytes(PHOTOS["photo-50-megapixel"])
    path = write_manifest_bytes(
        tmp_path, [b"R1,Monitor,852852,big.jpg\n", b"R2,Monitor,852852,\n"]
    )
    source = f"big-{uuid.uuid4().hex[:8]}"

    report = ingest_manifest(ctx.sessions, ctx.store, path, source=source)

    assert report.inserted == 1
    assert "exceeds the limit of 40000000 pixels" in report.errors[0]


def test_ingest_invalid_utf8_description_rejected(ctx, tmp_path) -> None:
    path = write_manifest_bytes(
        tmp_path, [b"R1,Lap\xfftop,847130,\n", b"R2,Laptop,847130,\n"]
    )
    source = f"utf8-{uuid.uuid4().hex[:8]}"

    report = ingest_manifest(ctx.sessions, ctx.store, path, source=source)

    assert report.inserted == 1
    assert report.errors == ["line 2: description is not valid UTF-8"]


def test_ingest_control_characters_cleaned(ctx, tmp_path) -> None:
    path = write_manifest_bytes(tmp_path, [b"R1,Lap\x07top\x1b bag,847130,\n"])
    source = f"control-{uuid.uuid4().hex[:8]}"

    ingest_manifest(ctx.sessions, ctx.store, path, source=source)
    with ctx.sessions() as session:
        description = session.scalar(
            select(Declaration.description).where(Declaration.source == source)
        )

    assert description == "Lap top bag"


def test_ingest_duplicate_across_files_one_declaration(ctx, tmp_path) -> None:
    first = write_manifest_bytes(tmp_path / "a", [b"R1,Laptop,847130,\n"])
    second = write_manifest_bytes(tmp_path / "b", [b"R1,Laptop bag,420212,\n"])
    source = f"across-{uuid.uuid4().hex[:8]}"

    ingest_manifest(ctx.sessions, ctx.store, first, source=source)
    report = ingest_manifest(ctx.sessions, ctx.store, second, source=source)

    assert report.updated == 1
    assert list(declaration_ids(ctx, source)) == ["R1"]


def test_ingest_zero_byte_manifest_loads_nothing(ctx, tmp_path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    source = f"zero-{uuid.uuid4().hex[:8]}"

    report = ingest_manifest(ctx.sessions, ctx.store, path, source=source)
    with ctx.sessions() as session:
        errors = session.scalar(
            select(func.count())
            .select_from(IngestError)
            .where(IngestError.source == source)
        )

    assert report.rows == 0
    assert errors == 0



def test_unresolved_failures_omit_fixed_photo(ctx, hostile_run, version_id) -> None:
    fixed = hostile_run["ids"]["photo-missing"]
    still_failing = hostile_run["ids"]["photo-50-megapixel"]
    ctx.store.put(store_photo(ctx, "photo-missing"), PHOTOS["photo-cmyk"])
    score(ctx, source=SOURCE, rescore=False, resume=None, wait=True, retry_failed=True)

    with ctx.sessions() as session:
        unresolved = set(session.scalars(unresolved_failures(version_id)))

    assert fixed not in unresolved
    assert still_failing in unresolved
