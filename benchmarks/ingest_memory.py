"""Ingest manifests of growing size into PostgreSQL and report time and peak memory.

    python benchmarks/ingest_memory.py --sizes 10MB,100MB,1GB

Each size gets a text-only CSV manifest, streamed to a temporary file, and a
fresh database on 127.0.0.1:5432 that is dropped afterwards. The ingest runs
in a child process of its own, so its peak resident memory (ru_maxrss) is
that ingest's alone.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parents[1]
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DATABASE_PREFIX = "hscode_test_bench"
UNITS = {"KB": 1024, "MB": 1024**2, "GB": 1024**3}
WORDS = (
    "portable",
    "computer",
    "steel",
    "bolt",
    "cotton",
    "shirt",
    "lamp",
    "cable",
    "engine",
    "valve",
    "plastic",
    "toy",
    "glass",
    "bottle",
)
CODES = (
    "8471300000",
    "7318150000",
    "6205200000",
    "9405110000",
    "8544429000",
    "8481804000",
    "9503009000",
    "7013370000",
)


def parse_size(text: str) -> int:
    """Return the bytes of a size such as 10MB or 1GB."""
    text = text.strip().upper()
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    raise argparse.ArgumentTypeError(f"size {text!r} needs a unit: KB, MB or GB")


def write_manifest(path: Path, size: int) -> int:
    """Stream rows with unique references until the file reaches `size` bytes."""
    rows = written = 0
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("reference,description,hs_code\n")
        while written < size:
            words = " ".join(WORDS[(rows + i * 7) % len(WORDS)] for i in range(8))
            line = f"REF-{rows:010d},{words} model {rows % 9973},{CODES[rows % 8]}\n"
            file.write(line)
            written += len(line)
            rows += 1
    return rows


def admin(statement: sql.Composable, dsn: str = ADMIN_DSN) -> None:
    """Run CREATE or DROP DATABASE on a server, the local one by default."""
    connection = psycopg2.connect(dsn, connect_timeout=10)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def measure(size_name: str, size: int, folder: Path) -> dict:
    """Write a manifest of one size, ingest it in a child process, clean up."""
    manifest = folder / f"manifest-{size_name}.csv"
    rows = write_manifest(manifest, size)
    name = f"{DATABASE_PREFIX}_{uuid.uuid4().hex[:12]}"
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", str(manifest)],
            cwd=ROOT,
            env={
                **os.environ,
                "HSCODE_DATA_DIR": str(folder / "data"),
                "HSCODE_DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}",
            },
            stdout=subprocess.PIPE,
            text=True,
        )
        output = child.stdout.read()
        # wait4 returns this child's own resource usage, peak memory included.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise RuntimeError(f"ingest of {manifest} exited with {child.returncode}")
    finally:
        admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )
        manifest.unlink(missing_ok=True)
    result = json.loads(output.strip().splitlines()[-1])
    return {
        "size": size_name,
        "bytes": size,
        "rows": rows,
        **result,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def run_child(manifest: Path) -> None:
    """Ingest one manifest with the product's code and print its counts as JSON."""
    sys.path.insert(0, str(ROOT))
    from hscode.context import open_context
    from db.ingest import ingest_manifest

    ctx = open_context()
    ctx.engine  # migrate before the clock starts
    started = time.perf_counter()
    report = ingest_manifest(ctx.sessions, ctx.store, manifest, source="bench")
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "inserted": report.inserted,
                "rejected": report.rejected,
                "seconds": round(seconds, 1),
                "rows_per_s": round(report.rows / seconds),
            }
        )
    )


def main() -> None:
    """Measure each requested size and print one line per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="10MB,100MB,1GB",
        help="comma-separated sizes (default 10MB,100MB,1GB)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child)
        return

    try:
        sizes = [(text.strip(), parse_size(text)) for text in args.sizes.split(",")]
    except argparse.ArgumentTypeError as error:
        parser.error(f"--sizes: {error}")
    print(f"{'size':>6} {'rows':>10} {'seconds':>8} {'rows/s':>8} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory(prefix="hscode-bench-") as folder:
        for name, size in sizes:
            result = measure(name, size, Path(folder))
            print(
                f"{name:>6} {result['rows']:>10} {result['seconds']:>8} "
                f"{result['rows_per_s']:>8} {result['peak_rss_mb']:>12}",
                flush=True,
            )


if __name__ == "__main__":
    main()
