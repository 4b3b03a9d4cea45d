"""The screening and review commands: export, review, purge, score --cancel."""

import getpass
import sys
from pathlib import Path

from db.review import ReviewError, apply_pending
from hscode.context import CommandContext
from hscode.export import ExportFilter, select_rows, write_sheet
from hscode.purge import count_source, purge_source
from hscode.review import import_sheet
from hscode.runs import cancel_run, summarize_run

ERRORS_PRINTED = 50


def _command_error(message: str) -> Exception:
    from hscode.commands import CommandError

    return CommandError(message)


def cmd_export(ctx: CommandContext, args) -> int:
    """Write the selected predictions as a review sheet."""
    if args.since and args.until and args.since > args.until:
        raise _command_error(f"--since {args.since} is after --until {args.until}")
    selection = ExportFilter(
        run_id=args.run,
        source=args.source,
        since=args.since,
        until=args.until,
        all_predictions=args.all,
        needs_review=args.needs_review,
    )
    with ctx.sessions() as session:
        try:
            rows = select_rows(session, selection)
        except LookupError as error:
            raise _command_error(str(error.args[0])) from None
    written = write_sheet(rows, Path(args.output))
    kind = "flagged declarations"
    if args.all:
        kind = "predictions"
    elif args.needs_review:
        kind = "predictions needing review"
    print(f"exported {len(rows)} {kind} to {', '.join(map(str, written))}")
    return 0


def cmd_review(ctx: CommandContext, args) -> int:
    """Apply a filled review sheet, or the decisions inserted directly."""
    if args.apply_pending:
        with ctx.sessions() as session, session.begin():
            report = apply_pending(session)
        print(
            f"applied {report.applied} pending decisions, {len(report.errors)} rejected"
        )
        _print_errors(report.errors)
        return 1 if report.errors else 0
    if args.file is None:
        raise _command_error("name a review sheet, or pass --apply-pending")

    path = Path(args.file)
    if not path.is_file():
        raise _command_error(f"review sheet {path} not found")
    reviewer = args.reviewer or getpass.getuser()
    try:
        report = import_sheet(ctx.sessions, path, reviewer)
    except ReviewError as error:
        raise _command_error(str(error)) from None
    print(
        f"{path}: {report.applied} decisions applied, {report.skipped} rows "
        f"without a decision, {len(report.errors)} rejected"
    )
    _print_errors(report.errors)
    return 1 if report.errors else 0


def _print_errors(errors: list[str]) -> None:
    for message in errors[:ERRORS_PRINTED]:
        print(f"  rejected {message}")
    if len(errors) > ERRORS_PRINTED:
        print(f"  ... {len(errors) - ERRORS_PRINTED} more")


def cmd_purge(ctx: CommandContext, args) -> int:
    """Delete a source after a confirmation."""
    with ctx.sessions() as session:
        declarations, predictions = count_source(session, args.source)
    if declarations == 0:
        raise _command_error(f"source {args.source!r} has no declarations")
    if not args.yes:
        _confirm(args.source, declarations, predictions)
    report = purge_source(ctx.sessions, ctx.store, args.source)
    print(
        f"purged source {args.source!r}: {report.declarations} declarations, "
        f"{report.predictions} predictions, {report.photos_deleted} photos "
        f"deleted ({report.photos_kept} kept for other declarations)"
    )
    return 0


def _confirm(source: str, declarations: int, predictions: int) -> None:
    if not sys.stdin.isatty():
        raise _command_error(
            "purge needs a confirmation and no terminal is attached; pass --yes"
        )
    answer = input(
        f"Delete {declarations} declarations and {predictions} "
        f"predictions of source {source!r}? Type the source name to "
        "confirm: "
    )
    if answer.strip() != source:
        raise _command_error("purge not confirmed; nothing deleted")


def cancel(ctx: CommandContext, run_id: int) -> int:
    """Cancel a scoring run; print what it scored before."""
    with ctx.sessions() as session, session.begin():
        try:
            cancel_run(session, run_id)
        except (LookupError, ValueError) as error:
            raise _command_error(str(error.args[0])) from None
    print(f"run {run_id} cancelled; workers skip its chunks not yet scored")
    print_run_summary(ctx, run_id)
    return 0


def print_run_summary(ctx: CommandContext, run_id: int) -> None:
    """Print a run's scored, flagged, needing-review and failed counts."""
    with ctx.sessions() as session:
        print(summarize_run(session, run_id).line())
