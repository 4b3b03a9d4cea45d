"""`hscode review`: decisions from a sheet, or inserted directly, become codes."""

import csv
import uuid
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from db.engine import create_db_engine, migrate
from db.models import Declaration, ModelVersion, Prediction, ReviewDecision
from db.review import apply_pending
from db.settings import load_db_settings
from hscode.cli import main
from hscode.review import import_sheet
from db.engine import create_session_factory
from tests.services import create_database, drop_database


def export(tmp_path: Path) -> list[dict]:
    path = tmp_path / "sheet.csv"
    main(["export", "--all", "--output", str(path)])
    with path.open(encoding="utf-8-sig", newline="") as file:
        return list(csv.DictReader(file))


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def decided(data_dir: Path, declaration_id: str) -> str:
    engine = create_engine(f"sqlite:///{data_dir / 'hscode.db'}")
    with engine.connect() as connection:
        code = connection.scalar(
            text("SELECT hs_code FROM declarations WHERE id = :id"),
            {"id": int(declaration_id)},
        )
    engine.dispose()
    return code


def fill(rows: list[dict], index: int, decision: str, code: str = "") -> dict:
    return {**rows[index], "decision": decision, "decided_code": code}


def test_review_accept_stores_subheading(scored_env, tmp_path) -> None:
    rows = export(tmp_path)
    main(["review", str(write_csv(tmp_path / "r.csv", [fill(rows, 0, "accept")]))])

    assert decided(scored_env, rows[0]["declaration_id"]) == rows[0]["subheading"]


def test_review_keep_stores_declared_code(scored_env, tmp_path) -> None:
    rows = export(tmp_path)
    main(["review", str(write_csv(tmp_path / "r.csv", [fill(rows, 1, "keep")]))])

    assert decided(scored_env, rows[1]["declaration_id"]) == rows[1]["declared_hs_code"]


def test_review_set_normalizes_code(scored_env, tmp_path) -> None:
    rows = export(tmp_path)
    sheet = write_csv(tmp_path / "r.csv", [fill(rows, 2, "set", "8471.41-0000")])
    main(["review", str(sheet)])

    assert decided(scored_env, rows[2]["declaration_id"]) == "8471410000"


def test_review_reports_bad_row_and_applies_rest(scored_env, tmp_path, capsys):
    rows = export(tmp_path)
    sheet = write_csv(
        tmp_path / "r.csv",
        [
            fill(rows, 3, "set", "84x1"),
            fill(rows, 4, "set", "9018909000"),
        ],
    )
    status = main(["review", str(sheet)])

    assert status == 1
    assert "line 2: decided_code" in capsys.readouterr().out
    assert decided(scored_env, rows[4]["declaration_id"]) == "9018909000"


def test_review_blank_decision_skipped(scored_env, tmp_path, capsys) -> None:
    rows = export(tmp_path)
    main(["review", str(write_csv(tmp_path / "r.csv", [rows[5]]))])

    assert "0 decisions applied, 1 rows without a decision" in capsys.readouterr().out


def test_review_records_reviewer(scored_env, tmp_path) -> None:
    rows = export(tmp_path)
    sheet = write_csv(tmp_path / "r.csv", [fill(rows, 6, "keep")])
    main(["review", str(sheet), "--reviewer", "kim"])

    engine = create_engine(f"sqlite:///{scored_env / 'hscode.db'}")
    with engine.connect() as connection:
        reviewer = connection.scalar(
            text("SELECT reviewer FROM review_decisions WHERE declaration_id = :id"),
            {"id": int(rows[6]["declaration_id"])},
        )
    assert reviewer == "kim"


def test_review_reads_xlsx(scored_env, tmp_path) -> None:
    rows = export(tmp_path)
    workbook = Workbook()
    row = fill(rows, 7, "set", "8528590000")
    workbook.active.append(list(row))
    workbook.active.append(list(row.values()))
    workbook.save(tmp_path / "r.xlsx")
    main(["review", str(tmp_path / "r.xlsx")])

    assert decided(scored_env, rows[7]["declaration_id"]) == "8528590000"


@pytest.fixture(scope="module")
def pg_sessions(postgres_admin_url, tmp_path_factory):
    """Yield sessions on a migrated PostgreSQL database with one prediction."""
    url = create_database(postgres_admin_url)
    env = {
        "HSCODE_DATABASE_URL": url,
        "HSCODE_DATA_DIR": str(tmp_path_factory.mktemp("pg-review")),
    }
    engine = create_db_engine(load_db_settings(env))
    migrate(engine)
    sessions = create_session_factory(engine)
    yield sessions
    engine.dispose()
    drop_database(url)


def add_scored(sessions, declared: str | None) -> int:
    with sessions() as session, session.begin():
        version = ModelVersion(
            fusion="text",
            text_encoder="minilm",
            image_encoder=None,
            label_space={},
            hs_edition="HS2022",
            settings={},
            data_fingerprint="0" * 64,
            weights_key=f"models/{uuid.uuid4().hex}.tar",
            evaluation_set="t",
            metrics={},
        )
        declaration = Declaration(
            source="pg",
            reference=uuid.uuid4().hex,
            description="notebook",
            declared_hs_code=declared,
            attributes={},
        )
        session.add_all([version, declaration])
        session.flush()
        session.add(
            Prediction(
                declaration_id=declaration.id,
                model_version_id=version.id,
                heading="8471",
                heading_probability=0.8,
                subheading="847130",
                subheading_probability=0.7,
                top_k=[],
            )
        )
        return declaration.id


def test_apply_pending_accepts_prediction(pg_sessions) -> None:
    declaration_id = add_scored(pg_sessions, "8517130000")
    with pg_sessions() as session, session.begin():
        session.execute(
            text(
                "INSERT INTO review_decisions (declaration_id, decision, reviewer) "
                "VALUES (:id, 'accept', 'lee')"
            ),
            {"id": declaration_id},
        )
    with pg_sessions() as session, session.begin():
        apply_pending(session)

    with Session(pg_sessions.kw["bind"]) as session:
        assert session.get(Declaration, declaration_id).hs_code == "847130"


def test_apply_pending_records_error(pg_sessions) -> None:
    declaration_id = add_scored(pg_sessions, None)
    with pg_sessions() as session, session.begin():
        session.add(
            ReviewDecision(
                declaration_id=declaration_id, decision="keep", reviewer="lee"
            )
        )
    with pg_sessions() as session, session.begin():
        report = apply_pending(session)

    assert "no declared code" in report.errors[0]


def test_import_sheet_on_postgresql(pg_sessions, tmp_path) -> None:
    declaration_id = add_scored(pg_sessions, "8517130000")
    sheet = write_csv(
        tmp_path / "r.csv",
        [
            {
                "declaration_id": str(declaration_id),
                "decision": "keep",
                "decided_code": "",
                "reviewer": "",
            },
        ],
    )
    report = import_sheet(pg_sessions, sheet, "park")

    assert report.applied == 1


def test_review_same_sheet_twice_records_once(scored_env, tmp_path) -> None:
    rows = export(tmp_path)
    sheet = write_csv(tmp_path / "r.csv", [fill(rows, 9, "keep")])
    main(["review", str(sheet)])
    main(["review", str(sheet)])

    engine = create_engine(f"sqlite:///{scored_env / 'hscode.db'}")
    with engine.connect() as connection:
        count = connection.scalar(
            text("SELECT COUNT(*) FROM review_decisions WHERE declaration_id = :id"),
            {"id": int(rows[9]["declaration_id"])},
        )
    engine.dispose()
    assert count == 1
