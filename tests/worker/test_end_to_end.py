"""Ingest, train and score through a real Celery worker against PostgreSQL and S3."""


import pytest
from sqlalchemy import func, select, text

from db.models import Declaration, Prediction, ScoringRun
from db.registry import get_champion
from hscode.context import open_context
from hscode.scoring import score
from tests.factories import write_manifest
from tests.worker.celery_process import CeleryWorker
from training.settings import load_train_settings
from training.refresh import refresh
from db.ingest import ingest_manifest

CHUNK_SIZE = "16"


@pytest.fixture(scope="module")
def pipeline(module_services_env, tmp_path_factory):
    """Run the whole path once: ingest, train a weighted model, score via Celery."""
    folder = tmp_path_factory.mktemp("e2e")
    manifest = write_manifest(folder / "in", per_heading=15, photo_every=3,
                              declared_every=5)
    env = {**module_services_env, "HSCODE_CHUNK_SIZE": CHUNK_SIZE}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        ctx = open_context()
        report = ingest_manifest(ctx.sessions, ctx.store, manifest)
        version = refresh(ctx.sessions, ctx.store, load_train_settings(
            fusion="weighted", epochs=1, image_size=64, validation_fraction=0.0,
        )).version
        worker = CeleryWorker(env, folder / "worker.log")
        worker.start()
        try:
            progress = score(ctx, source=None, rescore=False, resume=None, wait=True)
        finally:
            worker.stop()
        yield {"ctx": ctx, "report": report, "version": version,
               "progress": progress, "worker_log": worker.log_tail(200)}


def test_ingest_loads_every_row(pipeline):
    assert pipeline["report"].inserted == 60


def test_ingest_stores_photos(pipeline):
    assert pipeline["report"].photos == 20


def test_train_makes_first_model_champion(pipeline):
    with pipeline["ctx"].sessions() as session:
        assert get_champion(session).id == pipeline["version"].id


def test_train_records_test_metrics(pipeline):
    assert pipeline["version"].metrics["test"]["count"] > 0


def test_score_runs_through_celery_worker(pipeline):
    assert "chunk" in pipeline["worker_log"]


def test_score_run_done(pipeline):
    assert pipeline["progress"].status == "done"


def test_score_predicts_every_declaration_once(pipeline):
    with pipeline["ctx"].sessions() as session:
        per_declaration = session.execute(
            select(Prediction.declaration_id, func.count())
            .group_by(Prediction.declaration_id)
        ).all()
        declarations = session.scalar(select(func.count()).select_from(Declaration))
    assert len(per_declaration) == declarations
    assert {count for _, count in per_declaration} == {1}


def test_score_splits_run_into_chunks(pipeline):
    with pipeline["ctx"].sessions() as session:
        run = session.get(ScoringRun, pipeline["progress"].run_id)
    assert run.chunk_count == 4


def test_predictions_respect_hierarchy(pipeline):
    with pipeline["ctx"].sessions() as session:
        rows = session.execute(select(Prediction.heading, Prediction.subheading)).all()
    assert all(sub.startswith(heading) for heading, sub in rows)


def test_predictions_keep_top5(pipeline):
    with pipeline["ctx"].sessions() as session:
        top_k = session.scalars(select(Prediction.top_k)).first()
    assert len(top_k) == 5


def test_latest_predictions_view_lists_every_declaration(pipeline):
    with pipeline["ctx"].engine.connect() as connection:
        count = connection.execute(text("SELECT COUNT(*) FROM latest_predictions"))
        assert count.scalar() == 60


def test_latest_predictions_view_names_headings(pipeline):
    query = text("SELECT heading_name_en FROM latest_predictions WHERE heading = '8471'")
    with pipeline["ctx"].engine.connect() as connection:
        names = connection.execute(query).scalars().all()
    assert all(name.startswith("Automatic data processing") for name in names)


def test_screening_flags_view_is_queryable(pipeline):
    with pipeline["ctx"].engine.connect() as connection:
        flags = connection.execute(text(
            "SELECT declared_heading, heading, heading_probability, "
            "min_heading_probability FROM screening_flags"
        )).all()
    assert all(row.declared_heading != row.heading for row in flags)
