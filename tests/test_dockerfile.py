"""Tests for Dockerfile.gpu: base image, user and entry point."""

import json
import re
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile.gpu"

CUDA_RUNTIME_IMAGE = re.compile(r"nvidia/cuda:[\w.]+-(?:cudnn-)?runtime-[\w.]+")
ROOT_USERS = {"root", "0"}


def parse_instructions(text: str) -> list[tuple[str, str]]:
    """Split a Dockerfile into (INSTRUCTION, arguments), joining continued lines."""
    instructions: list[tuple[str, str]] = []
    pending = ""

    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue

        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue

        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""

    return instructions


def positions(instructions: list[tuple[str, str]], keyword: str) -> list[int]:
    """Return the indexes of every instruction with the given keyword."""
    return [index for index, (name, _) in enumerate(instructions) if name == keyword]


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_instructions(DOCKERFILE.read_text(encoding="utf-8"))


def test_parse_joins_continued_lines() -> None:
    text = "# comment\nRUN apt-get update \\\n    && apt-get install -y curl\n"

    assert parse_instructions(text) == [
        ("RUN", "apt-get update  && apt-get install -y curl")
    ]


def test_base_image_is_cuda_runtime(instructions: list[tuple[str, str]]) -> None:
    base = instructions[positions(instructions, "FROM")[-1]][1].split()[0]

    assert CUDA_RUNTIME_IMAGE.fullmatch(base), base


def test_user_set_before_entrypoint(instructions: list[tuple[str, str]]) -> None:
    users = positions(instructions, "USER")
    entrypoint = positions(instructions, "ENTRYPOINT")[-1]

    assert users
    assert users[-1] < entrypoint


def test_user_is_not_root(instructions: list[tuple[str, str]]) -> None:
    user = instructions[positions(instructions, "USER")[-1]][1]

    assert user.partition(":")[0] not in ROOT_USERS


def test_entrypoint_runs_celery_worker_app(
    instructions: list[tuple[str, str]],
) -> None:
    entrypoint = json.loads(instructions[positions(instructions, "ENTRYPOINT")[-1]][1])

    assert entrypoint[0] == "celery"
    assert entrypoint[entrypoint.index("-A") + 1] == "worker.app"
    assert entrypoint[-1] == "worker"


def test_default_cmd_scores_on_one_process(
    instructions: list[tuple[str, str]],
) -> None:
    command = json.loads(instructions[positions(instructions, "CMD")[-1]][1])

    assert command == [
        "--pool", "solo", "--concurrency", "1", "--queues", "score",
        "--loglevel", "INFO",
    ]


def test_workdir_is_app(instructions: list[tuple[str, str]]) -> None:
    assert instructions[positions(instructions, "WORKDIR")[-1]][1] == "/app"


def test_python_output_unbuffered(instructions: list[tuple[str, str]]) -> None:
    env = " ".join(instructions[index][1] for index in positions(instructions, "ENV"))

    assert "PYTHONUNBUFFERED=1" in env.split()
