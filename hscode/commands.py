"""The subcommands: each opens the context, does one task, prints the outcome."""

import getpass
import json
import logging
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from tqdm import tqdm

from db.ingest import ingest_manifest
from db.manifest import parse_column_map
from db.models import (
    Declaration,
    IngestError,
    ModelVersion,
    Prediction,
    PromotionDecision,
    ScoringFailure,
    ScoringRun,
)
from db.registry import get_champion
from hscode import screening
from hscode.context import CommandContext, open_context
from hscode.report_render import HTML_SUFFIXES, MARKDOWN_SUFFIXES, render_report
from hscode.scoring import evaluate_manifest, score
from model.device import resolve_device
from training.promotion import promote_version, rollback
from training.refresh import refresh
from training.report import ReportError, build_report
from training.settings import load_train_settings
from training.train import TrainingError
from worker.runs import unresolved_failures

logger = logging.getLogger(__name__)

MAX_ERRORS_PRINTED = 20
FAILURES_PRINTED = 5
FAILURE_ERROR_CHARS = 160


class CommandError(RuntimeError):
    """A command cannot run with the arguments or data given."""


def run(args) -> int:
    """Dispatch to the command named in `args`."""
    ctx = open_context()
    handlers = {
        "migrate": cmd_migrate,
        "ingest": cmd_ingest,
        "train": cmd_train,
        "promote": cmd_promote,
        "rollback": cmd_rollback,
        "score": cmd_score,
        "evaluate": cmd_evaluate,
        "status": cmd_status,
        "report": cmd_report,
        "demo": cmd_demo,
        "export": screening.cmd_export,
        "review": screening.cmd_review,
        "purge": screening.cmd_purge,
    }
    return handlers[args.command](ctx, args)


def cmd_migrate(ctx: CommandContext, _args) -> int:
    ctx.engine  # migrates on first use
    print(f"schema up to date: {ctx.db.masked()['database_url']}")
    return 0


def cmd_ingest(ctx: CommandContext, args) -> int:
    try:
        column_map = parse_column_map(args.map)
    except ValueError as error:
        raise CommandError(str(error)) from None
    path = Path(args.path)
    if not path.is_file():
        raise CommandError(f"manifest {path} not found")

    bar = tqdm(desc=f"ingest {path.name}", unit=" rows", disable=not sys.stderr.isatty())
    report = ingest_manifest(
        ctx.sessions, ctx.store, path, source=args.source, column_map=column_map,
        zero_pad=args.zero_pad, chapters=set(args.chapters or []) or None,
        progress=lambda rows: bar.update(rows - bar.n),
    )
    bar.close()

    print(
        f"{path}: {report.rows} rows, {report.inserted} inserted, "
        f"{report.updated} updated, {report.unchanged} unchanged, "
        f"{report.skipped} outside the chapters, {report.rejected} rejected; "
        f"{report.photos} photos stored (source {report.source!r})"
    )
    for message in report.errors[:MAX_ERRORS_PRINTED]:
        print(f"  rejected {message}")
    if report.rejected > MAX_ERRORS_PRINTED:
        print(f"  ... {report.rejected - MAX_ERRORS_PRINTED} more in table ingest_errors")
    # Rejected rows make the exit status 1, so a scheduler can alert on them.
    return 1 if report.rejected else 0


def cmd_train(ctx: CommandContext, args) -> int:
    settings = load_train_settings(
        fusion=args.fusion, chapters=args.chapters, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        text_model=args.text_model, device=args.device,
        ngram_buckets=args.ngram_buckets, nomenclature_names=args.nomenclature_names,
    )
    try:
        result = refresh(ctx.sessions, ctx.store, settings, actor=_actor())
    except TrainingError as error:
        raise CommandError(str(error)) from None
    print_version(result.version)
    print(f"  {result.decision.action}: {result.decision.reason}")
    return 0


def cmd_promote(ctx: CommandContext, args) -> int:
    with ctx.sessions() as session, session.begin():
        try:
            decision = promote_version(session, args.version, _actor())
        except (LookupError, ValueError) as error:
            raise CommandError(str(error)) from None
    print(f"model version {decision.champion_id} is now the champion "
          f"(was {decision.previous_champion_id})")
    return 0


def cmd_rollback(ctx: CommandContext, _args) -> int:
    with ctx.sessions() as session, session.begin():
        try:
            decision = rollback(session, _actor())
        except LookupError as error:
            raise CommandError(str(error)) from None
    print(f"rolled back: model version {decision.champion_id} is the champion "
          f"again, version {decision.previous_champion_id} retired")
    return 0


def _actor() -> str:
    """Name the person running the command, for the promotion record."""
    return f"{getpass.getuser()} (hscode)"


def print_version(version: ModelVersion) -> None:
    """Print a model version's identity and test accuracy."""
    test = version.metrics.get("test", {})
    print(
        f"model version {version.id} ({version.status}): {version.fusion} fusion, "
        f"text encoder {version.text_encoder}, "
        f"{version.label_space['headings']} headings, "
        f"{version.label_space['subheadings']} subheadings"
    )
    if test:
        print(
            f"  held-out test ({test['count']} rows): heading accuracy "
            f"{test['heading_accuracy']:.3f} (top-3 {test['heading_top3_accuracy']:.3f}), "
            f"subheading accuracy {test['subheading_accuracy']:.3f} "
            f"(top-3 {test['subheading_top3_accuracy']:.3f})"
        )


def cmd_score(ctx: CommandContext, args) -> int:
    if args.cancel is not None:
        return screening.cancel(ctx, args.cancel)
    progress = score(ctx, source=args.source, rescore=args.rescore,
                     resume=args.resume, wait=args.wait,
                     retry_failed=args.retry_failed)
    if progress is None:
        return 0
    print(
        f"run {progress.run_id} {progress.status}: {progress.scored} scored, "
        f"{progress.failed} failed of {progress.total} declarations"
    )
    screening.print_run_summary(ctx, progress.run_id)
    return 1 if progress.failed else 0


def cmd_evaluate(ctx: CommandContext, args) -> int:
    try:
        column_map = parse_column_map(args.map)
    except ValueError as error:
        raise CommandError(str(error)) from None
    metrics = evaluate_manifest(ctx, Path(args.path), column_map, args.zero_pad)
    if args.json:
        print(json.dumps(metrics))
        return 0
    chapters = metrics.pop("chapters", {})
    for name, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{name:28} {shown}")
    for chapter, stats in chapters.items():
        print(f"chapter {chapter:20} {stats['count']:6} rows, heading "
              f"{stats['heading_accuracy']:.4f}, subheading "
              f"{stats['subheading_accuracy']:.4f}")
    return 0


def cmd_report(ctx: CommandContext, args) -> int:
    output = Path(args.output)
    suffixes = HTML_SUFFIXES + MARKDOWN_SUFFIXES
    if output.suffix.lower() not in suffixes:
        raise CommandError(
            f"report output {output} must end in one of {', '.join(suffixes)}"
        )
    # Both files are written after minutes of scoring, so create their folders first.
    paths = [output] + ([Path(args.json)] if args.json else [])
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(f"cannot create the folder of {path}: {error}") from None

    try:
        report = build_report(ctx.sessions, ctx.store, resolve_device(args.device or "auto"),
                              baselines=not args.no_baselines)
    except ReportError as error:
        raise CommandError(str(error)) from None

    written = render_report(report, output)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")

    for target in report["targets"]:
        verdict = {True: "met", False: "missed", None: "not measured"}[target["met"]]
        print(f"{verdict:12} {target['name']}: {target['measured']} "
              f"(target {target['target']})")
    print(f"wrote {written[0]}"
          + (f" and {len(written) - 1} more files beside it" if len(written) > 1 else ""))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def cmd_status(ctx: CommandContext, _args) -> int:
    with ctx.sessions() as session:
        counts = {
            "declarations": _count(session, Declaration),
            "labelled declarations": session.scalar(
                select(func.count()).where(Declaration.hs_code.is_not(None))
            ),
            "predictions": _count(session, Prediction),
            "scoring failures": _count(session, ScoringFailure),
            "ingest errors": _count(session, IngestError),
            "model versions": _count(session, ModelVersion),
        }
        champion = get_champion(session)
        runs = session.scalars(
            select(ScoringRun).order_by(ScoringRun.id.desc()).limit(5)
        ).all()
        decisions = session.scalars(
            select(PromotionDecision).order_by(PromotionDecision.id.desc()).limit(5)
        ).all()
        # Failures that a later champion prediction resolved are not listed.
        failures_query = select(ScoringFailure)
        if champion is not None:
            failures_query = failures_query.where(
                ScoringFailure.declaration_id.in_(unresolved_failures(champion.id))
            )
        failures = session.scalars(
            failures_query
            .order_by(ScoringFailure.failed_at.desc(), ScoringFailure.id.desc())
            .limit(FAILURES_PRINTED)
        ).all()

    for name, value in counts.items():
        print(f"{name:22} {value}")
    if champion is None:
        print("champion               none (run `hscode train`)")
    else:
        print_version(champion)
    for run in runs:
        print(f"run {run.id}: {run.status}, {run.total} declarations, "
              f"created {run.created_at:%Y-%m-%d %H:%M}")
    for decision in decisions:
        print(f"{decision.decided_at:%Y-%m-%d %H:%M} {decision.action} "
              f"version {decision.candidate_id} by {decision.actor}: "
              f"{decision.reason}")
    _print_failures(failures)
    return 0


def _print_failures(failures: list[ScoringFailure]) -> None:
    """Print the latest scoring failures, one line each."""
    if not failures:
        return
    print("unresolved scoring failures (retry with `hscode score --retry-failed`):")
    for failure in failures:
        error = " ".join(failure.error.split())[:FAILURE_ERROR_CHARS]
        print(f"  declaration {failure.declaration_id} (run {failure.run_id}, "
              f"{failure.stage}, {failure.attempts} attempts): {error}")


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def cmd_demo(ctx: CommandContext, args) -> int:
    from hscode.demo import run_demo

    started = time.perf_counter()
    run_demo(ctx, args.epochs)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0
