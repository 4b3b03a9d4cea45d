"""Tests for loading manifests with db.ingest, on PostgreSQL and the moto S3 store."""

import csv
import hashlib
import io
import json
import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import create_db_engine, create_session_factory, migrate
from db.ingest import MAX_ERRORS_KEPT, IngestReport, ingest_manifest
from db.manifest import FIELDS
from db.models import Declaration, DeclarationChange, IngestError
from db.settings import load_db_settings
from db.storage import ObjectStore, create_store
from tests.services import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, S3Server

PHOTO_KEY = re.compile(r"photos/sha256/([0-9a-f]{2})/([0-9a-f]{64})\.(jpg|png)")
INCOMING_BUCKET = "hscode-incoming"


def jpeg_bytes(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, "JPEG")
    return buffer.getvalue()


def noise_jpeg_bytes() -> bytes:
    """Return a JPEG of random noise, long enough to truncate after its header."""
    pixels = random.Random(0).randbytes(96 * 96 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (96, 96), pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def rgba_png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (16, 16), (0, 128, 255, 60)).save(buffer, "PNG")
    return buffer.getvalue()


def cmyk_jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 50, 100, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as CSV with the manifest fields first, then any extra columns."""
    extra = [key for row in rows for key in row if key not in FIELDS]
    columns = list(FIELDS) + list(dict.fromkeys(extra))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def s3_env(
    database_url: str,
    s3_server: S3Server,
    storage_bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Point the product at the test database and the moto bucket.

    Unlike `use_services`, this leaves out Redis, which ingest does not use,
    because the `redis_url` fixture flushes a database of the shared server.
    """
    env = {
        "HSCODE_DATABASE_URL": database_url,
        "HSCODE_STORAGE_URL": f"s3://{storage_bucket}",
        "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture(scope="module")
def sessions(s3_env: dict[str, str]) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(load_db_settings(s3_env))
    migrate(engine)
    yield create_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def store(s3_env: dict[str, str]) -> ObjectStore:
    return create_store(load_db_settings(s3_env))


@pytest.fixture(scope="module")
def incoming_bucket(s3_server: S3Server) -> str:
    """Create a second bucket for photos that manifests name by s3:// URL."""
    s3_server.create_bucket(INCOMING_BUCKET)
    return INCOMING_BUCKET


@pytest.fixture
def source() -> str:
    """Return a source name no other test uses, so tests share one database."""
    return f"test-{uuid.uuid4().hex[:12]}"


def declarations_of(
    sessions: sessionmaker[Session], source: str
) -> dict[str, Declaration]:
    with sessions() as session:
        rows = session.scalars(select(Declaration).where(Declaration.source == source))
        return {row.reference: row for row in rows}


def errors_of(sessions: sessionmaker[Session], source: str) -> dict[int, IngestError]:
    with sessions() as session:
        rows = session.scalars(select(IngestError).where(IngestError.source == source))
        return {row.line: row for row in rows}


def report_error(report: IngestReport, line: int) -> str:
    matches = [e for e in report.errors if e.startswith(f"line {line}: ")]
    assert len(matches) == 1, report.errors
    return matches[0]


# Rows of the mixed manifest: (reference, row fields, expected error or None).
# Line numbers start at 2, after the CSV header.
MIXED_ROWS: list[tuple[str, dict[str, str], str | None]] = [
    ("good-photo", {"hs_code": "8471.30-0000", "image": "good.jpg"}, None),
    ("no-description", {"description": "  "}, "description is missing or blank"),
    (
        "code-letters",
        {"hs_code": "85AB13"},
        "hs_code: HS code '85AB13' contains characters other than digits",
    ),
    ("code-short", {"hs_code": "85171"}, "has 5 digits; expected 6 to 10"),
    ("code-long", {"hs_code": "85171300001"}, "has 11 digits; expected 6 to 10"),
    ("missing-file", {"image": "missing.jpg"}, "file not found"),
    ("traversal", {"image": "../../etc/passwd"}, "outside the manifest's folder"),
    ("absolute", {"image": "ABSOLUTE"}, "outside the manifest's folder"),
    ("parent-photo", {"image": "../outside.jpg"}, "outside the manifest's folder"),
    ("empty-photo", {"image": "empty.jpg"}, "empty file"),
    ("corrupt-photo", {"image": "corrupt.jpg"}, "truncated or corrupt JPEG"),
    ("folder-photo", {"image": "subfolder"}, "file not found"),
    ("good-plain", {"hs_code": "940330"}, None),
]
MIXED_ERRORS = [
    (line, reference, reason)
    for line, (reference, _, reason) in enumerate(MIXED_ROWS, start=2)
    if reason is not None
]


@pytest.fixture(scope="module")
def mixed(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[IngestReport, str]:
    """Ingest one manifest of good and bad rows; return the report and source."""
    root = tmp_path_factory.mktemp("mixed")
    folder = root / "batch"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(jpeg_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    noise = noise_jpeg_bytes()
    (folder / "corrupt.jpg").write_bytes(noise[: len(noise) * 2 // 3])
    (folder / "subfolder").mkdir()
    outside = root / "outside.jpg"
    outside.write_bytes(jpeg_bytes((0, 0, 255)))

    rows = []
    for reference, fields, _ in MIXED_ROWS:
        row = {"reference": reference, "description": "Goods", "hs_code": "847130"}
        row.update(fields)
        if row.get("image") == "ABSOLUTE":
            row["image"] = str(outside)
        rows.append(row)
    path = write_csv(folder / "manifest.csv", rows)

    source = f"mixed-{uuid.uuid4().hex[:12]}"
    report = ingest_manifest(sessions, store, path, source=source)
    return report, source


def test_ingest_mixed_counts(mixed: tuple[IngestReport, str]) -> None:
    report, _ = mixed

    assert report.rows == len(MIXED_ROWS)
    assert report.inserted == 2
    assert report.rejected == len(MIXED_ERRORS)
    assert report.photos == 1


def test_ingest_mixed_loads_good_rows(
    mixed: tuple[IngestReport, str], sessions: sessionmaker[Session]
) -> None:
    _, source = mixed

    loaded = declarations_of(sessions, source)

    assert sorted(loaded) == ["good-photo", "good-plain"]
    assert loaded["good-photo"].hs_code == "8471300000"
    assert PHOTO_KEY.fullmatch(loaded["good-photo"].image_key or "")
    assert loaded["good-plain"].image_key is None


@pytest.mark.parametrize(("line", "reference", "reason"), MIXED_ERRORS)
def test_ingest_bad_row_in_report(
    mixed: tuple[IngestReport, str], line: int, reference: str, reason: str
) -> None:
    report, _ = mixed

    assert reason in report_error(report, line)


@pytest.mark.parametrize(("line", "reference", "reason"), MIXED_ERRORS)
def test_ingest_bad_row_in_table(
    mixed: tuple[IngestReport, str],
    sessions: sessionmaker[Session],
    line: int,
    reference: str,
    reason: str,
) -> None:
    report, source = mixed

    stored = errors_of(sessions, source)[line]

    assert stored.reference == reference
    assert stored.reason.startswith(f"line {line}: ")
    assert reason in stored.reason
    assert stored.path == report.path


def test_ingest_table_has_every_error(
    mixed: tuple[IngestReport, str], sessions: sessionmaker[Session]
) -> None:
    _, source = mixed

    assert sorted(errors_of(sessions, source)) == [line for line, _, _ in MIXED_ERRORS]


def test_ingest_photo_error_names_image(mixed: tuple[IngestReport, str]) -> None:
    report, _ = mixed

    assert "photo '../../etc/passwd'" in report_error(report, 8)


def test_ingest_missing_manifest_raises(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv not found"):
        ingest_manifest(sessions, store, tmp_path / "nope.csv")


def test_ingest_source_defaults_to_file_name(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path
) -> None:
    name = f"default-{uuid.uuid4().hex[:12]}.csv"
    path = write_csv(tmp_path / name, [{"reference": "R1", "description": "Pen"}])

    report = ingest_manifest(sessions, store, path)

    assert report.source == name
    assert list(declarations_of(sessions, name)) == ["R1"]


def test_ingest_same_file_twice_unchanged(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    rows = [
        {"reference": "R1", "description": "Laptop", "hs_code": "847130"},
        {"reference": "R2", "description": "Phone", "image": "a.jpg"},
        {"reference": "R3", "description": "Chair", "declared_hs_code": "940171"},
    ]
    path = write_csv(tmp_path / "m.csv", rows)
    ingest_manifest(sessions, store, path, source=source)
    before = declarations_of(sessions, source)

    second = ingest_manifest(sessions, store, path, source=source)

    assert second.inserted == 0
    assert second.updated == 0
    assert second.unchanged == 3
    assert declarations_of(sessions, source).keys() == before.keys()


def test_ingest_same_file_twice_no_changes(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    path = write_csv(
        tmp_path / "m.csv",
        [{"reference": "R1", "description": "Laptop", "hs_code": "847130"}],
    )
    ingest_manifest(sessions, store, path, source=source)
    ingest_manifest(sessions, store, path, source=source)
    declaration_id = declarations_of(sessions, source)["R1"].id

    with sessions() as session:
        changes = session.scalar(
            select(func.count())
            .select_from(DeclarationChange)
            .where(DeclarationChange.declaration_id == declaration_id)
        )

    assert changes == 0


def test_ingest_changed_code_updates(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    rows = [
        {"reference": "R1", "description": "Laptop", "hs_code": "847130"},
        {"reference": "R2", "description": "Phone", "hs_code": "851713"},
    ]
    ingest_manifest(sessions, store, write_csv(tmp_path / "m.csv", rows), source=source)
    rows[1]["hs_code"] = "8517.14"
    path = write_csv(tmp_path / "m.csv", rows)

    report = ingest_manifest(sessions, store, path, source=source)
    declaration = declarations_of(sessions, source)["R2"]
    with sessions() as session:
        changes = session.scalars(
            select(DeclarationChange).where(
                DeclarationChange.declaration_id == declaration.id
            )
        ).all()

    assert report.updated == 1
    assert report.unchanged == 1
    assert report.inserted == 0
    assert declaration.hs_code == "851714"
    assert len(changes) == 1
    assert changes[0].field == "hs_code"
    assert changes[0].old_value == "851713"
    assert changes[0].new_value == "851714"
    assert changes[0].origin == f"{path} line 3"


def test_ingest_added_declared_code_recorded(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    row = {"reference": "R1", "description": "Laptop", "hs_code": "847130"}
    ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", [row]), source=source
    )
    row["declared_hs_code"] = "847141"
    path = write_csv(tmp_path / "m.csv", [row])

    ingest_manifest(sessions, store, path, source=source)
    declaration = declarations_of(sessions, source)["R1"]
    with sessions() as session:
        change = session.scalars(
            select(DeclarationChange).where(
                DeclarationChange.declaration_id == declaration.id
            )
        ).one()

    assert declaration.declared_hs_code == "847141"
    assert change.field == "declared_hs_code"
    assert change.old_value is None
    assert change.new_value == "847141"


def test_ingest_duplicate_reference_rejected(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    rows = [
        {"reference": "R1", "description": "Laptop", "hs_code": "847130"},
        {"reference": "R2", "description": "Phone"},
        {"reference": "R1", "description": "Tablet", "hs_code": "847141"},
    ]
    path = write_csv(tmp_path / "m.csv", rows)

    report = ingest_manifest(sessions, store, path, source=source)
    loaded = declarations_of(sessions, source)

    assert report.inserted == 2
    assert report.rejected == 1
    assert report_error(report, 4) == (
        "line 4: duplicate reference 'R1', first on line 2"
    )
    assert errors_of(sessions, source)[4].reference == "R1"
    assert loaded["R1"].description == "Laptop"


def test_ingest_duplicate_across_batches(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    rows = [{"reference": f"R{i}", "description": "Pen"} for i in range(5)]
    rows.append({"reference": "R0", "description": "Pen again"})
    path = write_csv(tmp_path / "m.csv", rows)
    progress: list[int] = []

    report = ingest_manifest(
        sessions, store, path, source=source, batch_size=2, progress=progress.append
    )

    assert report.inserted == 5
    assert "first on line 2" in report_error(report, 7)
    assert progress == [2, 4, 6, 6]


def test_ingest_same_reference_two_sources(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    row = {"reference": "SHARED-1", "description": "Laptop", "hs_code": "847130"}
    first = write_csv(tmp_path / "port-a.csv", [row])
    second = write_csv(tmp_path / "port-b.csv", [row])

    ingest_manifest(sessions, store, first, source=f"{source}-a")
    report = ingest_manifest(sessions, store, second, source=f"{source}-b")

    assert report.inserted == 1
    assert "SHARED-1" in declarations_of(sessions, f"{source}-a")
    assert "SHARED-1" in declarations_of(sessions, f"{source}-b")


def test_ingest_chapter_filter_skips(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    rows = [
        {"reference": "R1", "description": "Laptop", "hs_code": "847130"},
        {"reference": "R2", "description": "Phone", "hs_code": "851713"},
        {"reference": "R3", "description": "Pump", "hs_code": "8413.70"},
        {"reference": "R4", "description": "Unknown"},
        {"reference": "R5", "description": "Beef", "hs_code": "201300000"},
    ]
    path = write_csv(tmp_path / "m.csv", rows)

    report = ingest_manifest(
        sessions, store, path, source=source, chapters={"84"}, zero_pad=10
    )

    assert sorted(declarations_of(sessions, source)) == ["R1", "R3"]
    assert report.skipped == 3
    assert report.inserted == 2
    assert report.rejected == 0


def test_ingest_chapter_filter_after_zero_pad(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    rows = [{"reference": "R1", "description": "Beef", "hs_code": "201300000"}]
    path = write_csv(tmp_path / "m.csv", rows)

    report = ingest_manifest(
        sessions, store, path, source=source, chapters={"02"}, zero_pad=10
    )

    assert report.inserted == 1
    assert declarations_of(sessions, source)["R1"].hs_code == "0201300000"


def test_ingest_photo_key_content_addressed(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    data = jpeg_bytes((10, 200, 10))
    (tmp_path / "secret-invoice-name.jpg").write_bytes(data)
    rows = [
        {"reference": "R1", "description": "Lamp", "image": "secret-invoice-name.jpg"}
    ]
    path = write_csv(tmp_path / "m.csv", rows)

    ingest_manifest(sessions, store, path, source=source)
    key = declarations_of(sessions, source)["R1"].image_key or ""
    match = PHOTO_KEY.fullmatch(key)
    digest = hashlib.sha256(data).hexdigest()

    assert match is not None, key
    assert match.group(2) == digest
    assert match.group(1) == digest[:2]
    assert match.group(3) == "jpg"
    assert "secret" not in key


def test_ingest_photo_readable_from_bucket(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    s3_server: S3Server,
    storage_bucket: str,
    tmp_path: Path,
    source: str,
) -> None:
    data = jpeg_bytes((10, 20, 200))
    (tmp_path / "p.jpg").write_bytes(data)
    rows = [{"reference": "R1", "description": "Lamp", "image": "p.jpg"}]

    ingest_manifest(sessions, store, write_csv(tmp_path / "m.csv", rows), source=source)
    key = declarations_of(sessions, source)["R1"].image_key
    stored = s3_server.client().get_object(Bucket=storage_bucket, Key=key)

    assert stored["Body"].read() == data


def test_ingest_same_photo_one_object(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    s3_server: S3Server,
    storage_bucket: str,
    tmp_path: Path,
    source: str,
) -> None:
    data = jpeg_bytes((77, 77, 0))
    (tmp_path / "one.jpg").write_bytes(data)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "two.jpg").write_bytes(data)
    rows = [
        {"reference": "R1", "description": "Lamp", "image": "one.jpg"},
        {"reference": "R2", "description": "Lamp", "image": "nested/two.jpg"},
    ]
    digest = hashlib.sha256(data).hexdigest()

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )
    loaded = declarations_of(sessions, source)
    listing = s3_server.client().list_objects_v2(
        Bucket=storage_bucket, Prefix=f"photos/sha256/{digest[:2]}/{digest}"
    )

    assert report.photos == 2
    assert loaded["R1"].image_key == loaded["R2"].image_key
    assert listing["KeyCount"] == 1


def test_ingest_png_with_alpha(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    data = rgba_png_bytes()
    (tmp_path / "alpha.png").write_bytes(data)
    rows = [{"reference": "R1", "description": "Sticker", "image": "alpha.png"}]

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )
    key = declarations_of(sessions, source)["R1"].image_key or ""

    assert report.rejected == 0
    assert key.endswith(".png")
    assert store.get(key) == data


def test_ingest_cmyk_jpeg(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    data = cmyk_jpeg_bytes()
    (tmp_path / "print.jpg").write_bytes(data)
    rows = [{"reference": "R1", "description": "Poster", "image": "print.jpg"}]

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )
    key = declarations_of(sessions, source)["R1"].image_key or ""

    assert report.rejected == 0
    assert key.endswith(".jpg")
    assert store.get(key) == data


def test_ingest_photo_type_from_content(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    (tmp_path / "really-a-png.jpg").write_bytes(rgba_png_bytes())
    rows = [{"reference": "R1", "description": "Sticker", "image": "really-a-png.jpg"}]

    ingest_manifest(sessions, store, write_csv(tmp_path / "m.csv", rows), source=source)

    assert (declarations_of(sessions, source)["R1"].image_key or "").endswith(".png")


def test_ingest_symlink_outside_rejected(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg_bytes())
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "link.jpg").symlink_to(outside)
    rows = [{"reference": "R1", "description": "Lamp", "image": "link.jpg"}]

    report = ingest_manifest(
        sessions, store, write_csv(folder / "m.csv", rows), source=source
    )

    assert report.inserted == 0
    assert "outside the manifest's folder" in report_error(report, 2)


def test_ingest_sql_text_stored_verbatim(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    text = "'); DROP TABLE declarations; --"
    rows = [{"reference": "R1'; --", "description": text, "note": '"; DELETE --'}]

    ingest_manifest(sessions, store, write_csv(tmp_path / "m.csv", rows), source=source)
    loaded = declarations_of(sessions, source)
    with sessions() as session:
        tables = inspect(session.connection()).get_table_names()

    assert loaded["R1'; --"].description == text
    assert loaded["R1'; --"].attributes == {"note": '"; DELETE --'}
    assert "declarations" in tables


def test_ingest_attributes_stored(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    records = [
        {"reference": "R1", "description": "Laptop", "origin": "KR", "weight": 2.5},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", records)

    ingest_manifest(sessions, store, path, source=source)

    assert declarations_of(sessions, source)["R1"].attributes == {
        "origin": "KR",
        "weight": 2.5,
    }


def test_ingest_copy_escapes_backslash_and_tab(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    records = [{"reference": "R\\1", "description": "C:\\tmp\\N drill",
                "note": "a\tb\nc\\d\r"}]
    path = write_jsonl(tmp_path / "m.jsonl", records)

    ingest_manifest(sessions, store, path, source=source)
    loaded = declarations_of(sessions, source)

    assert loaded["R\\1"].description == "C:\\tmp\\N drill"
    assert loaded["R\\1"].attributes == {"note": "a\tb\nc\\d\r"}


def test_ingest_new_rows_into_loaded_source(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    first = [{"reference": "R1", "description": "Laptop", "hs_code": "847130"}]
    second = first + [{"reference": "R2", "description": "Steel bolt"}]
    ingest_manifest(sessions, store, write_csv(tmp_path / "a.csv", first),
                    source=source)

    report = ingest_manifest(sessions, store, write_csv(tmp_path / "b.csv", second),
                             source=source)

    assert (report.inserted, report.unchanged) == (1, 1)


def test_ingest_jsonl_bad_lines_recorded(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b'{"reference": "R1", "description": "Laptop"}\n'
        b'{"reference": "R2", "description": \n'
        b'{"reference": "R3", "description": "Caf\xe9"}\n'
        b"[1, 2]\n"
    )

    report = ingest_manifest(sessions, store, path, source=source)
    stored = errors_of(sessions, source)

    assert report.inserted == 1
    assert report.rejected == 3
    assert stored[2].reason.startswith("line 2: invalid JSON")
    assert stored[3].reason == "line 3: invalid UTF-8"
    assert stored[4].reason == "line 4: expected a JSON object"


def test_ingest_huge_description_rejected(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    rows = [
        {"reference": "R1", "description": "x" * 1_000_000},
        {"reference": "R2", "description": "Pen"},
    ]

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )

    assert report.inserted == 1
    assert "description has 1000000 characters" in report_error(report, 2)


def test_ingest_report_caps_kept_errors(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    count = MAX_ERRORS_KEPT + 5
    rows = [{"reference": f"R{i}", "description": ""} for i in range(count)]

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )

    assert report.rejected == count
    assert len(report.errors) == MAX_ERRORS_KEPT
    assert len(errors_of(sessions, source)) == count


def test_ingest_s3_reference_copied(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    s3_server: S3Server,
    incoming_bucket: str,
    tmp_path: Path,
    source: str,
) -> None:
    data = jpeg_bytes((123, 45, 67))
    s3_server.client().put_object(
        Bucket=incoming_bucket, Key="scans/2024/lamp.jpg", Body=data
    )
    rows = [
        {
            "reference": "R1",
            "description": "Lamp",
            "image": f"s3://{incoming_bucket}/scans/2024/lamp.jpg",
        }
    ]

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )
    key = declarations_of(sessions, source)["R1"].image_key or ""

    assert report.photos == 1
    assert PHOTO_KEY.fullmatch(key)
    assert "lamp" not in key
    assert store.get(key) == data


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (f"s3://{INCOMING_BUCKET}/no/such/photo.jpg", "S3 object not found"),
        ("s3://no-such-bucket-hscode/photo.jpg", "S3 bucket not found"),
        (f"s3://{INCOMING_BUCKET}", "invalid S3 URL: expected s3://bucket/key"),
        (f"s3://{INCOMING_BUCKET}/", "invalid S3 URL: expected s3://bucket/key"),
        ("s3://Bad_Bucket!/photo.jpg", "invalid S3 URL: invalid bucket name or key"),
    ],
)
def test_ingest_s3_unreadable_rejected(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    incoming_bucket: str,
    tmp_path: Path,
    source: str,
    image: str,
    reason: str,
) -> None:
    rows = [
        {"reference": "R1", "description": "Lamp", "image": image},
        {"reference": "R2", "description": "Pen"},
    ]

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )

    assert report.inserted == 1
    assert report_error(report, 2) == f"line 2: photo {image!r}: {reason}"
    assert errors_of(sessions, source)[2].reason == report_error(report, 2)


def test_ingest_nul_in_image_rejected(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    rows = [
        {"reference": "R1", "description": "Lamp", "image": "a\x00b.jpg"},
        {"reference": "R2", "description": "Pen"},
    ]

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )

    assert report.inserted == 1
    assert report_error(report, 2) == (
        "line 2: image 'a\\x00b.jpg' contains control characters"
    )


def test_ingest_nul_in_reference_rejected(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    rows = [
        {"reference": "R\x001", "description": "Lamp"},
        {"reference": "R2", "description": "Pen"},
    ]

    report = ingest_manifest(
        sessions, store, write_csv(tmp_path / "m.csv", rows), source=source
    )
    stored = errors_of(sessions, source)

    assert report.inserted == 1
    assert report_error(report, 2) == (
        "line 2: reference 'R\\x001' contains control characters"
    )
    assert stored[2].reference == "R1"


def test_ingest_nul_in_attribute_loads(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    # PostgreSQL cannot store U+0000 in text or JSONB.
    records = [
        {"reference": "R1", "description": "Lamp", "note": "a\x00b"},
        {"reference": "R2", "description": "Pen", "tags": ["x\x00"], "k\x00": 1},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", records)

    report = ingest_manifest(sessions, store, path, source=source)
    loaded = declarations_of(sessions, source)

    assert report.inserted == 2
    assert "\x00" not in json.dumps(loaded["R1"].attributes)
    assert "\x00" not in json.dumps(loaded["R2"].attributes)


def test_ingest_nan_attribute_loads(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    # Python's json reads NaN and Infinity, which JSONB rejects.
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"reference": "R1", "description": "Lamp", "weight": NaN}\n'
        '{"reference": "R2", "description": "Pen", "weight": Infinity}\n'
    )

    report = ingest_manifest(sessions, store, path, source=source)
    loaded = declarations_of(sessions, source)

    assert report.inserted == 2
    assert loaded["R1"].attributes == {"weight": None}


def test_ingest_invalid_utf8_reference_recorded(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(
        b"reference,description,maker\nR\xe91,Lamp,x\nR2,Pen,Soci\xe9t\xe9\nR3,Cup,y\n"
    )

    report = ingest_manifest(sessions, store, path, source=source)
    stored = errors_of(sessions, source)

    assert report.inserted == 2
    assert stored[2].reason == "line 2: reference is not valid UTF-8"
    assert stored[2].reference == "R?1"
    assert declarations_of(sessions, source)["R2"].attributes == {"maker": "Soci?t?"}


def test_ingest_invalid_utf8_header_loads(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, source: str
) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"reference,description,Pa\xefs\nR1,Lamp,KR\n")

    report = ingest_manifest(sessions, store, path, source=source)

    assert report.inserted == 1
    assert declarations_of(sessions, source)["R1"].attributes == {"Pa?s": "KR"}


def test_ingest_embedded_sqlite_local_store(embedded_env: Path, tmp_path: Path) -> None:
    settings = load_db_settings()
    engine = create_db_engine(settings)
    migrate(engine)
    sessions = create_session_factory(engine)
    store = create_store(settings)
    data = jpeg_bytes()
    (tmp_path / "p.jpg").write_bytes(data)
    rows = [
        {
            "reference": "R1",
            "description": "Lamp",
            "hs_code": "9405.11",
            "image": "p.jpg",
        },
        {"reference": "R2", "description": "Pen", "hs_code": "96AB08"},
    ]

    report = ingest_manifest(sessions, store, write_csv(tmp_path / "m.csv", rows))
    loaded = declarations_of(sessions, "m.csv")
    engine.dispose()

    assert report.inserted == 1
    assert report.rejected == 1
    assert loaded["R1"].hs_code == "940511"
    assert store.get(loaded["R1"].image_key or "") == data
    assert (embedded_env / "objects" / (loaded["R1"].image_key or "")).is_file()
