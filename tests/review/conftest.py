"""An embedded data folder with a tiny model trained and every declaration scored."""

import os
from pathlib import Path

import pytest

from hscode.cli import main
from tests.factories import write_manifest


def _clear_service_variables(patch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HSCODE_") or name == "AWS_ENDPOINT_URL":
            patch.delenv(name)


@pytest.fixture(scope="session")
def scored_data_dir(tmp_path_factory) -> Path:
    """Ingest 48 real cases, train one epoch, score them; return the data folder."""
    folder = tmp_path_factory.mktemp("review")
    manifest = write_manifest(folder / "manifest", per_heading=12, declared_every=4)
    with pytest.MonkeyPatch.context() as patch:
        _clear_service_variables(patch)
        patch.setenv("HSCODE_DATA_DIR", str(folder / "data"))
        assert main(["ingest", str(manifest), "--source", "cases"]) == 0
        assert main(["train", "--epochs", "1"]) == 0
        assert main(["score"]) == 0
    return folder / "data"


@pytest.fixture
def scored_env(scored_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the product at the scored data folder for one test."""
    _clear_service_variables(monkeypatch)
    monkeypatch.setenv("HSCODE_DATA_DIR", str(scored_data_dir))
    return scored_data_dir
