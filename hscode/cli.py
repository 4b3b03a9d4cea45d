"""Argument parsing and dispatch for the `hscode` command."""

import argparse
import logging
import sys
from datetime import date

from db.settings import SettingsError
from worker.settings import WorkerSettingsError

logger = logging.getLogger("hscode")


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="hscode",
        description="Batch HS heading and subheading classification of declarations.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug lines")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="create or upgrade the database schema")

    ingest = commands.add_parser("ingest", help="load a CSV or JSON Lines manifest")
    ingest.add_argument("path", help="manifest file (.csv, .jsonl)")
    ingest.add_argument("--source", help="source name (default: the file name)")
    ingest.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                        help="read FIELD from COLUMN, e.g. description=name")
    ingest.add_argument("--zero-pad", type=int, metavar="N",
                        help="restore the leading zero of N-digit codes stored as "
                        "numbers (codes of N-1 digits get a 0 prefix)")
    ingest.add_argument("--chapters", type=_chapters, metavar="84,85,90",
                        help="load only rows whose decided code is in these chapters")

    train = commands.add_parser("train", help="train and register a model")
    train.add_argument("--model", dest="fusion",
                       choices=["auto", "text", "image", "concat", "weighted"],
                       help="encoders and fusion (default auto: weighted with "
                       "photos, text without)")
    train.add_argument("--chapters", type=_chapters, metavar="84,85,90",
                       help="train on these chapters only")
    train.add_argument("--epochs", type=int, help="passes over the training rows (6)")
    train.add_argument("--batch-size", type=int, help="rows per batch (32)")
    train.add_argument("--learning-rate", type=float, help="encoder rate (8e-5)")
    train.add_argument("--text-model", help="minilm, a local folder or a model id")
    train.add_argument("--ngram-buckets", type=int, metavar="N",
                       help="hash buckets of the word and character n-gram view "
                       "(131072); 0 trains the encoders alone, as the study did")
    train.add_argument("--no-nomenclature-names", dest="nomenclature_names",
                       action="store_false", default=None,
                       help="train on decided cases only, not also on the "
                       "subheadings' nomenclature names")
    train.add_argument("--device", help="auto, cpu or cuda")

    promote = commands.add_parser(
        "promote", help="make a model version the champion, whatever its metrics"
    )
    promote.add_argument("version", type=int, help="model version id")
    commands.add_parser("rollback", help="restore the champion the current one replaced")

    score = commands.add_parser("score", help="score declarations with the champion")
    score.add_argument("--source", help="only declarations of this source")
    score.add_argument("--rescore", action="store_true",
                       help="score declarations that already have a prediction too")
    score.add_argument("--resume", type=int, metavar="RUN",
                       help="queue again the chunks a run still lacks")
    score.add_argument("--retry-failed", action="store_true",
                       help="score only the declarations whose latest failure "
                       "no champion prediction followed")
    score.add_argument("--wait", action="store_true",
                       help="show progress until the run ends")
    score.add_argument("--cancel", type=int, metavar="RUN",
                       help="cancel a run: workers skip its chunks not yet scored")

    evaluate = commands.add_parser("evaluate",
                                   help="evaluate the champion on a labelled manifest")
    evaluate.add_argument("path")
    evaluate.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN")
    evaluate.add_argument("--zero-pad", type=int, metavar="N")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    commands.add_parser("status", help="counts, runs, failures and the champion")
    report_help = ("measure the study's models, baselines and the champion on the "
                   "frozen evaluation set; write an HTML or Markdown report")
    report = commands.add_parser("report", help=report_help, description=report_help)
    report.add_argument("--output", default="report.html", metavar="PATH",
                        help="PATH.html (one self-contained file) or PATH.md "
                        "(plots in PATH_files/); default report.html")
    report.add_argument("--json", metavar="PATH",
                        help="also write the measured figures as JSON")
    report.add_argument("--no-baselines", action="store_true",
                        help="skip the TF-IDF and zero-shot baselines")
    report.add_argument("--device", help="auto, cpu or cuda (default auto)")
    _add_review_commands(commands)

    demo = commands.add_parser("demo", help="ingest, train and score the shipped cases")
    demo.add_argument("--epochs", type=int, default=None,
                      help="training epochs (the demo's faster default: 3)")
    return parser


def _add_review_commands(commands) -> None:
    export = commands.add_parser(
        "export", help="write flagged (or needing review, or all) predictions as a "
        "review sheet (CSV and Excel)"
    )
    chosen = export.add_mutually_exclusive_group()
    chosen.add_argument("--run", type=int, metavar="RUN",
                        help="only declarations of this scoring run")
    chosen.add_argument("--source", help="only declarations of this source")
    export.add_argument("--since", type=_date, metavar="YYYY-MM-DD",
                        help="predicted on or after this day (UTC)")
    export.add_argument("--until", type=_date, metavar="YYYY-MM-DD",
                        help="predicted on or before this day (UTC)")
    rows = export.add_mutually_exclusive_group()
    rows.add_argument("--all", action="store_true",
                      help="every latest prediction, not only the flagged ones")
    rows.add_argument("--needs-review", action="store_true",
                      help="the latest predictions below the auto-accept "
                      "threshold, flagged or not")
    export.add_argument("--output", required=True, metavar="PATH",
                        help="PATH.csv or PATH.xlsx writes that file; any other "
                        "PATH writes both PATH.csv and PATH.xlsx")

    review = commands.add_parser(
        "review", help="apply the decisions of a filled review sheet"
    )
    review.add_argument("file", nargs="?", help="the sheet (.csv or .xlsx)")
    review.add_argument("--reviewer", help="who decided, where the sheet names "
                        "no reviewer (default: the login name)")
    review.add_argument("--apply-pending", action="store_true",
                        help="apply the rows inserted directly into "
                        "review_decisions")

    purge = commands.add_parser(
        "purge", help="delete a source's declarations, predictions and photos"
    )
    purge.add_argument("source")
    purge.add_argument("--yes", action="store_true",
                       help="do not ask for confirmation")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-01-31")


def _chapters(text: str) -> list[str]:
    chapters = [c.strip().zfill(2) for c in text.split(",") if c.strip()]
    if not chapters or not all(c.isdigit() and len(c) == 2 for c in chapters):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 84,85,90")
    return chapters


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _quiet_libraries()

    from hscode import commands

    try:
        return commands.run(args)
    except (SettingsError, WorkerSettingsError, commands.CommandError) as error:
        print(f"hscode {args.command}: {error}", file=sys.stderr)
        return 2


def _quiet_libraries() -> None:
    for name in ("botocore", "urllib3", "httpx", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
