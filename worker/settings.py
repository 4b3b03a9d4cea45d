"""Worker settings: documented defaults, overridden by the environment."""

import os
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.connection import parse_url

DEFAULT_CHUNK_SIZE = 512
"""Declarations per Celery task."""
DEFAULT_PHOTO_THREADS = 8
"""Threads fetching and decoding photos while the model runs."""
DEFAULT_VISIBILITY_TIMEOUT_S = 3600
"""Seconds before Redis hands an unacknowledged task to another worker; longer
than the slowest chunk."""
DEFAULT_REFRESH_SCHEDULE = "0 3 * * 0"
"""Cron schedule of the model refresh: Sundays at 03:00."""
DEFAULT_SCORE_SCHEDULE = "0 1 * * *"
"""Cron schedule of the nightly scoring of new declarations: 01:00."""
SCORE_QUEUE = "score"
TRAIN_QUEUE = "train"


class WorkerSettingsError(ValueError):
    """A worker setting in the environment is invalid."""


@dataclass(frozen=True)
class WorkerSettings:
    """Broker, batching, device and schedule settings of the workers."""

    broker_url: str | None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    device: str = "auto"
    max_tokens: int | None = None
    """Token budget of one micro-batch (rows times padded length). None takes
    the device's default: 1024 on a CPU, 8192 on a GPU."""
    max_photos: int | None = None
    """Photos per micro-batch. None takes the device's default: 8 on a CPU,
    256 on a GPU."""
    photo_threads: int = DEFAULT_PHOTO_THREADS
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S
    bf16: bool = True
    """bf16 autocast on CUDA."""
    bf16_cpu: bool = False
    """bf16 autocast on CPUs with native bf16 (AVX-512 BF16, AMX) too. Off by
    default: it moved subheading accuracy by 0.32 points (docs/benchmarks.md)."""
    refresh_schedule: str = DEFAULT_REFRESH_SCHEDULE
    score_schedule: str = DEFAULT_SCORE_SCHEDULE
    timezone: str = "UTC"
    """Time zone of both schedules."""

    @property
    def embedded(self) -> bool:
        """Whether tasks run in the calling process (no broker configured)."""
        return self.broker_url is None


def load_worker_settings(environ: dict[str, str] | None = None) -> WorkerSettings:
    """Read `HSCODE_BROKER_URL` and the `HSCODE_*` worker tunables."""
    env = os.environ if environ is None else environ
    broker_url = env.get("HSCODE_BROKER_URL") or None
    if broker_url:
        _check_broker_url(broker_url)
    return WorkerSettings(
        broker_url=broker_url,
        chunk_size=_positive(env, "HSCODE_CHUNK_SIZE", DEFAULT_CHUNK_SIZE),
        device=env.get("HSCODE_DEVICE") or "auto",
        max_tokens=_positive(env, "HSCODE_MAX_TOKENS", None),
        max_photos=_positive(env, "HSCODE_MAX_PHOTOS", None),
        photo_threads=_positive(env, "HSCODE_PHOTO_THREADS", DEFAULT_PHOTO_THREADS),
        visibility_timeout_s=_positive(
            env, "HSCODE_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_S
        ),
        bf16=_flag(env, "HSCODE_BF16", True),
        bf16_cpu=_flag(env, "HSCODE_BF16_CPU", False),
        refresh_schedule=_cron(env, "HSCODE_REFRESH_SCHEDULE", DEFAULT_REFRESH_SCHEDULE),
        score_schedule=_cron(env, "HSCODE_SCORE_SCHEDULE", DEFAULT_SCORE_SCHEDULE),
        timezone=_timezone(env.get("HSCODE_TIMEZONE") or "UTC"),
    )


def _cron(env, name: str, default: str) -> str:
    value = env.get(name) or default
    if len(value.split()) != 5:
        raise WorkerSettingsError(
            f"{name}={value!r} is not a cron expression of 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    return value


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WorkerSettingsError(f"HSCODE_TIMEZONE={name!r} is not a time zone") from None
    return name


def _flag(env, name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise WorkerSettingsError(f"{name}={raw!r} is invalid; set it to 1 or 0")


def _positive(env, name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise WorkerSettingsError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise WorkerSettingsError(f"{name}={value} must be at least 1")
    return value


def _check_broker_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://")):
        raise WorkerSettingsError(
            "HSCODE_BROKER_URL must be a redis:// URL, for example "
            "redis://127.0.0.1:6379/0"
        )
    parse_url(url)
