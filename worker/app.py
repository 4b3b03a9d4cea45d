"""The Celery application: `celery -A worker.app worker`, and `beat` for schedules."""

import logging

from celery import Celery
from celery.schedules import crontab
from celery.signals import after_setup_logger, worker_process_init

from worker.settings import SCORE_QUEUE, TRAIN_QUEUE, load_worker_settings

logger = logging.getLogger(__name__)

settings = load_worker_settings()


def _crontab(expression: str) -> crontab:
    minute, hour, day_of_month, month, day_of_week = expression.split()
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month, day_of_week=day_of_week)


app = Celery(
    "hscode",
    broker=settings.broker_url or "memory://",
    include=["worker.tasks", "training.tasks"],
)
app.conf.update(
    # Late acknowledgement with prefetch 1: a task is removed from Redis only
    # after its chunk is written, and a dead worker holds back one chunk at most.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "visibility_timeout": settings.visibility_timeout_s,
        # Sweep for tasks of dead workers every few seconds instead of kombu's
        # default of about 100 s, so one returns soon after its timeout.
        "unacked_restore_interval": min(10, settings.visibility_timeout_s),
        "unacked_restore_throttle": 1,
    },
    broker_connection_retry_on_startup=True,
    task_default_queue=SCORE_QUEUE,
    task_routes={"training.tasks.*": {"queue": TRAIN_QUEUE}},
    task_ignore_result=True,
    worker_concurrency=1,
    worker_hijack_root_logger=True,
    timezone=settings.timezone,
    beat_schedule={
        "refresh-model": {
            "task": "training.tasks.refresh_model",
            "schedule": _crontab(settings.refresh_schedule),
            "options": {"queue": TRAIN_QUEUE},
        },
        "score-new-declarations": {
            "task": "worker.tasks.score_new_declarations",
            "schedule": _crontab(settings.score_schedule),
            "options": {"queue": SCORE_QUEUE},
        },
    },
)


@worker_process_init.connect
def _reset_process_state(**_kwargs) -> None:
    # A forked child must open its own database connections and CUDA context.
    from worker import tasks

    tasks.reset_context()


@after_setup_logger.connect
def _log_settings(logger, **_kwargs) -> None:
    logger.info("worker settings: chunk size %d, device %s, max tokens %s, "
                "max photos %s, bf16 %s, bf16 on CPU %s", settings.chunk_size,
                settings.device, settings.max_tokens or "device default",
                settings.max_photos or "device default", settings.bf16,
                settings.bf16_cpu)
