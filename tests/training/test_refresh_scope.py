"""A refresh keeps the champion's scope, and refuses to compare across scopes."""

import pytest

from db.ingest import ingest_manifest
from hscode.context import open_context
from tests.factories import write_manifest
from training.refresh import refresh
from training.settings import load_train_settings


@pytest.fixture
def ctx(embedded_env, tmp_path):
    context = open_context()
    ingest_manifest(context.sessions, context.store, write_manifest(tmp_path / "m", 12))
    return context


def test_refresh_defaults_to_champion_chapters(ctx):
    refresh(ctx.sessions, ctx.store, load_train_settings(
        chapters=["84"], epochs=1, validation_fraction=0.0))
    second = refresh(ctx.sessions, ctx.store, load_train_settings(
        epochs=1, validation_fraction=0.0))
    assert second.version.settings["chapters"] == ["84"]


def test_refresh_rejects_other_scope(ctx):
    refresh(ctx.sessions, ctx.store, load_train_settings(
        chapters=["84"], epochs=1, validation_fraction=0.0))
    other = refresh(ctx.sessions, ctx.store, load_train_settings(
        chapters=["84", "85"], epochs=1, validation_fraction=0.0))
    assert other.decision.action == "reject"
    assert "was evaluated on" in other.decision.reason
