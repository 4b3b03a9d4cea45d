"""`hscode score` summary and cancel, and `hscode purge`."""

import io

from sqlalchemy import create_engine, select, text

from db.models import (
    Declaration,
    ModelVersion,
    ScoringChunk,
    ScoringFailure,
    ScoringRun,
)
from hscode.cli import main
from tests.factories import write_manifest


def scalar(data_dir, sql: str, **params):
    engine = create_engine(f"sqlite:///{data_dir / 'hscode.db'}")
    with engine.connect() as connection:
        value = connection.scalar(text(sql), params)
    engine.dispose()
    return value


def test_score_prints_run_summary(scored_env, capsys) -> None:
    main(["score", "--source", "none"])

    assert "flagged" in capsys.readouterr().out


def test_score_summary_counts_review(scored_env, capsys) -> None:
    main(["score", "--source", "none"])

    assert "needing review" in capsys.readouterr().out


def test_summary_leaves_out_failed_declarations(scored_env) -> None:
    from hscode.context import open_context
    from hscode.runs import summarize_run

    ctx = open_context()
    with ctx.sessions() as session, session.begin():
        review_id = session.scalar(text(
            "SELECT declaration_id FROM latest_predictions WHERE needs_review LIMIT 1"
        ))
        champion = session.scalar(
            select(ModelVersion).where(ModelVersion.status == "champion")
        )
        run = ScoringRun(model_version_id=champion.id, total=1, status="done",
                         chunk_count=1)
        session.add(run)
        session.flush()
        session.add(ScoringChunk(run_id=run.id, declaration_ids=[review_id],
                                 status="done", scored=0, failed=1))
        session.add(ScoringFailure(run_id=run.id, declaration_id=review_id,
                                   stage="photo", error="photo not found",
                                   attempts=1))
    with ctx.sessions() as session:
        summary = summarize_run(session, run.id)

    assert summary.needs_review == 0


def test_cancel_marks_run_cancelled(scored_env, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "c", per_heading=1)
    main(["ingest", str(manifest), "--source", "to-cancel"])
    from hscode.context import open_context
    from worker.runs import create_run

    ctx = open_context()
    with ctx.sessions() as session, session.begin():
        run_id = create_run(session, 512, "to-cancel").id
    main(["score", "--cancel", str(run_id)])

    assert (
        scalar(scored_env, "SELECT status FROM scoring_runs WHERE id = :id", id=run_id)
        == "cancelled"
    )


def test_run_chunks_follow_description_length(scored_env, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "l", per_heading=3)
    main(["ingest", str(manifest), "--source", "by-length"])
    from hscode.context import open_context
    from worker.runs import create_run, pending_chunk_ids

    ctx = open_context()
    with ctx.sessions() as session, session.begin():
        run = create_run(session, 4, "by-length")
        ids = [i for chunk_id in pending_chunk_ids(session, run.id)
               for i in session.get(ScoringChunk, chunk_id).declaration_ids]
        lengths = {d.id: len(d.description)
                   for d in session.scalars(select(Declaration).where(
                       Declaration.source == "by-length"))}
        session.delete(run)

    assert [lengths[i] for i in ids] == sorted(lengths.values())


def test_cancel_done_run_exits_2(scored_env, capsys) -> None:
    assert main(["score", "--cancel", "1"]) == 2
    assert "already done" in capsys.readouterr().err


def ingest_photos(folder, source: str) -> None:
    manifest = write_manifest(folder, per_heading=2, photo_every=2)
    main(["ingest", str(manifest), "--source", source])


def test_purge_without_terminal_exits_2(scored_env, tmp_path, monkeypatch) -> None:
    ingest_photos(tmp_path / "p", "purge-tty")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    assert main(["purge", "purge-tty"]) == 2


def test_purge_deletes_declarations(scored_env, tmp_path) -> None:
    ingest_photos(tmp_path / "p", "purge-one")
    main(["purge", "purge-one", "--yes"])

    assert (
        scalar(
            scored_env, "SELECT COUNT(*) FROM declarations WHERE source = 'purge-one'"
        )
        == 0
    )


def test_purge_keeps_shared_photos(scored_env, tmp_path) -> None:
    ingest_photos(tmp_path / "a", "purge-a")
    ingest_photos(tmp_path / "b", "purge-b")
    key = scalar(
        scored_env,
        "SELECT image_key FROM declarations "
        "WHERE source = 'purge-a' AND image_key IS NOT NULL",
    )
    main(["purge", "purge-a", "--yes"])

    assert (scored_env / "objects" / key).is_file()


def purge_other_photo_sources(data_dir, keep: str) -> None:
    engine = create_engine(f"sqlite:///{data_dir / 'hscode.db'}")
    with engine.connect() as connection:
        sources = connection.scalars(
            text("SELECT DISTINCT source FROM declarations WHERE image_key IS NOT NULL")
        ).all()
    engine.dispose()
    for source in sources:
        if source != keep:
            main(["purge", source, "--yes"])


def test_purge_deletes_unshared_photos(scored_env, tmp_path) -> None:
    ingest_photos(tmp_path / "c", "purge-c")
    purge_other_photo_sources(scored_env, "purge-c")
    key = scalar(
        scored_env,
        "SELECT image_key FROM declarations "
        "WHERE source = 'purge-c' AND image_key IS NOT NULL",
    )
    main(["purge", "purge-c", "--yes"])

    assert not (scored_env / "objects" / key).exists()
