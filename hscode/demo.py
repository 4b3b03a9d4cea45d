"""The demo: the shipped customs cases of chapters 84, 85 and 90, end to end."""

from pathlib import Path

from sqlalchemy import text

from db.ingest import ingest_manifest
from hscode.commands import print_version
from hscode.context import CommandContext
from hscode.scoring import score
from training.settings import TrainSettings, load_train_settings
from training.refresh import refresh

CASES = Path(__file__).resolve().parents[1] / "data" / "kcs-cases" / "cases.csv"
CHAPTERS = ["84", "85", "90"]
DEMO_EPOCHS = 3
"""Fewer than `hscode train`'s default, so the demo fits in minutes on two cores."""

EXAMPLE_QUERIES = {
    "Most confident predictions": """
SELECT reference, description, heading, heading_probability
FROM latest_predictions
ORDER BY heading_probability DESC
LIMIT 5""",
    "Declarations per predicted heading": """
SELECT heading, heading_name_en, COUNT(*) AS declarations,
       ROUND(AVG(heading_probability), 3) AS mean_probability
FROM latest_predictions
GROUP BY heading, heading_name_en
ORDER BY declarations DESC
LIMIT 5""",
    "Confident disagreements with the decided code": """
SELECT reference, description, SUBSTR(decided_hs_code, 1, 6) AS decided,
       subheading AS predicted, ROUND(subheading_probability, 3) AS probability
FROM latest_predictions
WHERE SUBSTR(decided_hs_code, 1, 6) <> subheading
ORDER BY subheading_probability DESC
LIMIT 5""",
}


def run_demo(ctx: CommandContext, epochs: int | None) -> None:
    """Ingest, train, score and query; print each step's outcome."""
    epochs = epochs or DEMO_EPOCHS
    print(f"1/4 ingest {CASES.name}, chapters {', '.join(CHAPTERS)}")
    report = ingest_manifest(
        ctx.sessions, ctx.store, CASES, column_map={"description": "name",
                                                   "hs_code": "hscode"},
        zero_pad=10, chapters=set(CHAPTERS),
    )
    print(f"    {report.inserted} inserted, {report.unchanged} already loaded, "
          f"{report.rejected} rejected")

    print(f"2/4 train ({epochs} epochs; `hscode train` defaults to "
          f"{TrainSettings.epochs})")
    result = refresh(ctx.sessions, ctx.store,
                     load_train_settings(chapters=CHAPTERS, epochs=epochs),
                     actor="hscode demo")
    print_version(result.version)
    print(f"    {result.decision.action}: {result.decision.reason}")

    print("3/4 score every declaration with the champion")
    progress = score(ctx, source=None, rescore=False, resume=None, wait=True)
    print(f"    run {progress.run_id}: {progress.scored} scored, "
          f"{progress.failed} failed")

    print(f"4/4 query the predictions in SQL ({ctx.db.masked()['database_url']})")
    with ctx.engine.connect() as connection:
        for title, query in EXAMPLE_QUERIES.items():
            print(f"\n-- {title}{query};")
            for row in connection.execute(text(query)):
                print("   ", " | ".join(_cell(value) for value in row))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)[:60]
