"""Scoring runs from the command line: queue, run in-process, wait, evaluate."""

import logging
import sys
import time
from pathlib import Path

from sqlalchemy.exc import InterfaceError, OperationalError
from tqdm import tqdm

from db.ingest import read_manifest_photo
from db.manifest import RowError, read_rows, validate_row
from db.photos import PhotoError, decode_photo
from db.registry import get_champion
from hscode.context import CommandContext
from model.images import create_eval_transform
from model.inference import predict_probabilities
from training.evaluate import accuracy_metrics
from training.evidence import manifest_hit_rate
from worker.runs import (
    NoChampionError,
    RunProgress,
    create_run,
    pending_chunk_ids,
    run_progress,
)
from worker.scoring import score_chunk

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0
LOG_EVERY_SECONDS = 30.0


def score(
    ctx: CommandContext,
    *,
    source: str | None,
    rescore: bool,
    resume: int | None,
    wait: bool,
    retry_failed: bool = False,
) -> RunProgress | None:
    """Create (or resume) a run and queue its chunks; return its progress if waited on.

    Without a broker the chunks run here, through the worker's own code.
    """
    from hscode.commands import CommandError

    with ctx.sessions() as session, session.begin():
        if resume is not None:
            run_id = resume
            run_progress(session, run_id)  # raises when the run does not exist
        else:
            try:
                run_id = create_run(session, ctx.worker.chunk_size, source, rescore,
                                    retry_failed).id
            except NoChampionError as error:
                raise CommandError(str(error)) from None
        chunk_ids = pending_chunk_ids(session, run_id)
        total = run_progress(session, run_id).total
    print(f"run {run_id}: {total} declarations, {len(chunk_ids)} chunks to score")

    if ctx.worker.embedded:
        _score_in_process(ctx, chunk_ids, total)
    else:
        _queue(chunk_ids, run_id)
        if not wait:
            print(f"queued; follow with `hscode status` or `hscode score --resume {run_id} --wait`")
            return None
        _wait(ctx, run_id)

    with ctx.sessions() as session:
        return run_progress(session, run_id)


def _score_in_process(ctx: CommandContext, chunk_ids: list[int], total: int) -> None:
    bar = tqdm(total=total, desc="score", unit=" decl", disable=not sys.stderr.isatty())
    if not bar.disable:
        # The bar replaces the per-chunk log lines in a terminal.
        logging.getLogger("worker.scoring").setLevel(logging.WARNING)
    for chunk_id in chunk_ids:
        result = score_chunk(ctx.scoring, chunk_id)
        bar.update(result.scored + result.failed)
    bar.close()


def _queue(chunk_ids: list[int], run_id: int) -> None:
    from worker.tasks import queue_chunks

    queue_chunks(chunk_ids)
    logger.info("run %d: queued %d chunks", run_id, len(chunk_ids))


def _wait(ctx: CommandContext, run_id: int) -> None:
    """Poll the run's counts until every chunk is done: a bar, or a log line."""
    started = last_log = time.perf_counter()
    with ctx.sessions() as session:
        total = run_progress(session, run_id).total
    bar = tqdm(total=total, desc=f"run {run_id}", unit=" decl",
               disable=not sys.stderr.isatty())
    while True:
        progress = _poll(ctx, run_id)
        if progress is None:
            time.sleep(POLL_SECONDS)
            continue
        done = progress.scored + progress.failed
        bar.update(done - bar.n)
        if progress.finished or progress.status == "cancelled":
            break

        now = time.perf_counter()
        if bar.disable and now - last_log >= LOG_EVERY_SECONDS:
            rate = done / (now - started)
            eta = (total - done) / rate if rate else float("inf")
            logger.info("run %d: %d/%d scored, %d failed, %.0f/s, eta %.0fs",
                        run_id, progress.scored, total, progress.failed, rate, eta)
            last_log = now
        time.sleep(POLL_SECONDS)
    bar.close()


def _poll(ctx: CommandContext, run_id: int) -> RunProgress | None:
    """Return a run's progress, or None while the database is unreachable."""
    try:
        with ctx.sessions() as session:
            return run_progress(session, run_id)
    except (OperationalError, InterfaceError) as error:
        # The workers retry the same outage; the run goes on once it ends.
        logger.warning("run %d: database unreachable while waiting, polling again "
                       "in %.0f s: %s", run_id, POLL_SECONDS, error.orig or error)
        return None


def evaluate_manifest(
    ctx: CommandContext, path: Path, column_map: dict[str, str], zero_pad: int | None
) -> dict:
    """Score a labelled manifest with the champion, without storing anything."""
    from hscode.commands import CommandError

    if not path.is_file():
        raise CommandError(f"manifest {path} not found")
    texts, codes, photo_paths, skipped = _labelled_rows(path, column_map, zero_pad)
    if not codes:
        raise CommandError(f"{path} has no row with a valid description and hs_code")

    with ctx.sessions() as session:
        champion = get_champion(session)
    if champion is None:
        raise CommandError("no champion model; run `hscode train` first")
    loaded = ctx.scoring.models.get(champion)

    images = None
    if loaded.model.config.uses_image:
        transform = create_eval_transform(loaded.model.config.image_size)
        size = loaded.model.config.image_size
        images = [_local_photo(path.parent, p, transform, size) for p in photo_paths]
    probabilities = predict_probabilities(
        loaded.model, loaded.tokenizer, texts, images,
        text_embeddings=loaded.evidence is not None,
    )
    metrics = accuracy_metrics(probabilities, codes, loaded.model.labels)
    if probabilities.text_embeddings is not None:
        metrics["evidence_subheading_hit_rate"] = manifest_hit_rate(
            loaded.evidence, probabilities.text_embeddings, texts, codes
        )
    return {**metrics, "skipped_rows": skipped, "model_version": champion.id}


def _labelled_rows(path, column_map, zero_pad):
    texts, codes, photos, skipped = [], [], [], 0
    for item in read_rows(path):
        try:
            if isinstance(item, RowError):
                raise item
            row = validate_row(item, column_map, zero_pad)
        except RowError as error:
            logger.warning("skipped %s", error)
            skipped += 1
            continue
        if row.hs_code is None:
            skipped += 1
            continue
        texts.append(row.description)
        codes.append(row.hs_code)
        photos.append(row.image)
    return texts, codes, photos, skipped


def _local_photo(folder: Path, image: str | None, transform, size: int):
    if image is None:
        return None
    try:
        return transform(decode_photo(read_manifest_photo(folder, image), size))
    except PhotoError as error:
        logger.warning("photo %s unreadable (%s); scored without it", image, error)
        return None
