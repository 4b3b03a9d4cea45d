"""Scoring throughput: the model alone, the worker end to end, one at a time.

    python -m benchmarks.throughput --text 4000 --photos 400 --naive 100

In one run, on the same declarations, for a text-only model and a text and
photo model (weighted fusion, ResNet-50):

- model only: pre-tokenized, pre-decoded micro-batches already in memory,
  the forward pass and the softmax alone;
- end to end: declaration rows in PostgreSQL and photos in the object store,
  scored chunk by chunk by the worker's own `score_chunk` (claim, fetch,
  decode, tokenize, model, evidence, one bulk upsert);
- naive: the same code with chunks of one declaration.

It prints declarations per second, p50 and p95 latency per chunk, resident
memory after warm-up and at the end, and the model's FLOP utilisation. That
is the FLOPs per second of the forward passes, as torch's FlopCounterMode
counts them, over the peak of a square matrix multiply timed in the same run.

Descriptions are the shipped customs cases, reused in turn; photos are
generated 800 x 600 JPEGs of quality 85. The models are untrained (the heads
start random), which changes no FLOP and no byte of the work. Everything runs
in a throwaway database on the given PostgreSQL server and a temporary local
object store, both removed at the end.
"""

import argparse
import csv
import io
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from psycopg2 import sql
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.ingest_memory import DATABASE_PREFIX, admin
from db.engine import create_db_engine, create_session_factory, migrate
from db.ingest import insert_declarations
from db.nomenclature import HS_EDITION
from db.photos import decode_photo, inspect_photo, photo_extension
from db.registry import get_champion, promote
from db.settings import load_db_settings
from db.storage import create_store, photo_key
from model.device import cpu_has_native_bf16
from model.evidence import EvidenceCase, EvidenceIndex, normalize
from model.images import create_eval_transform
from model.inference import (
    autocast_for,
    batch_inputs,
    plan_batches,
    predict_probabilities,
)
from model.inputs import micro_batch_limits
from model.labels import LabelSpace
from model.predict import compute_probabilities
from training.register import register_model
from training.settings import TrainSettings
from training.train import create_untrained_model
from worker.runs import create_run, pending_chunk_ids
from worker.scoring import score_chunk
from worker.settings import load_worker_settings
from worker.tasks import create_scoring_context

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "data" / "kcs-cases" / "cases.csv"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PHOTO_SIZE = (800, 600)
PHOTO_QUALITY = 85
VARIANTS = {"text": "text", "photo": "weighted"}
"""Benchmark variant and the fusion of its model."""
MATMUL_SECONDS = 1.0

logger = logging.getLogger("benchmarks.throughput")


@dataclass
class Phase:
    """One measured phase of one variant."""

    variant: str
    phase: str
    declarations: int
    seconds: float
    flops: float = 0.0
    chunk_p50_ms: float | None = None
    chunk_p95_ms: float | None = None
    rss_warm_mb: float | None = None
    rss_end_mb: float | None = None

    @property
    def per_second(self) -> float:
        return self.declarations / self.seconds if self.seconds else 0.0

    def mfu(self, peak_flops: float) -> float:
        """Achieved FLOP/s over the measured matrix-multiply peak."""
        return self.flops / self.seconds / peak_flops if self.seconds else 0.0

    @property
    def rss_growth(self) -> float | None:
        if self.rss_warm_mb is None or self.rss_end_mb is None:
            return None
        return self.rss_end_mb / self.rss_warm_mb - 1


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table; write JSON with --json."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logger.setLevel(logging.INFO)
    torch.manual_seed(0)
    results = run_benchmark(args)
    print(format_results(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--text", type=_count(0), default=4000,
                        help="declarations of the text-only variant (default 4000; 0 skips)")
    parser.add_argument("--photos", type=_count(0), default=400,
                        help="declarations of the photo variant (default 400; 0 skips)")
    parser.add_argument("--naive", type=_count(0), default=100,
                        help="declarations scored one at a time per variant (default 100)")
    parser.add_argument("--evidence", type=_count(1), default=10000,
                        help="decided cases in the evidence index (default 10000; "
                             "embedding them takes about 30 s on 2 cores)")
    parser.add_argument("--chunk-size", type=_count(1),
                        help="declarations per chunk (default: HSCODE_CHUNK_SIZE or 512)")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL,
                        help="PostgreSQL server URL allowed to create databases "
                             f"(default {DEFAULT_ADMIN_URL})")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.text == 0 and args.photos == 0:
        parser.error("--text and --photos are both 0; nothing to measure")
    return args


def _count(minimum: int):
    """Return an argparse type that reads an integer of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is invalid; the minimum is {minimum}")
        return value

    return parse


def run_benchmark(args) -> dict:
    """Measure every phase of every variant requested; return the results."""
    worker = load_worker_settings({**os.environ, "HSCODE_BROKER_URL": ""})
    if args.chunk_size:
        worker = type(worker)(**{**asdict(worker), "chunk_size": args.chunk_size})
    cases = read_cases()
    with _throwaway_database(args.admin_url) as database_url, \
            tempfile.TemporaryDirectory(prefix="hscode-bench-") as folder:
        db_settings = load_db_settings({
            "HSCODE_DATABASE_URL": database_url, "HSCODE_DATA_DIR": folder,
        })
        engine = create_db_engine(db_settings)
        migrate(engine)
        sessions = create_session_factory(engine)
        store = create_store(db_settings)
        context = create_scoring_context(sessions, store, db_settings, worker)
        device = context.models.device
        peak, peak_dtype = measure_matmul_peak(device, worker)
        labels = LabelSpace.from_codes((code for _, code in cases), HS_EDITION)
        logger.info("label space: %d headings, %d subheadings",
                    len(labels.headings), len(labels.subheadings))

        phases, evidence = [], None
        for variant, count in (("text", args.text), ("photo", args.photos)):
            if count <= 0:
                continue
            model, tokenizer = create_untrained_model(
                TrainSettings(fusion=VARIANTS[variant]), labels
            )
            model.to(device).eval()
            if model.image_encoder is not None:
                model.image_encoder.to(memory_format=torch.channels_last)
            if evidence is None:
                logger.info("embedding %d decided cases for the evidence index",
                            min(args.evidence, len(cases)))
                evidence = build_evidence(model, tokenizer, cases[: args.evidence])
            texts = [cases[i % len(cases)][0] for i in range(count)]
            logger.info("%s: preparing %d declarations", variant, count)
            photos = make_photos(count) if variant == "photo" else None
            keys = _store_photos(store, photos) if photos else None
            _add_declarations(sessions, f"bench-{variant}", texts, keys)
            naive = min(args.naive, count)
            _add_declarations(sessions, f"bench-{variant}-naive", texts[:naive],
                              keys[:naive] if keys else None)
            version = register_model(
                sessions, store, model, tokenizer, TrainSettings(fusion=model.config.fusion),
                {}, data_fingerprint="benchmark", evaluation_set="benchmark",
                evidence=evidence,
            )
            with sessions() as session, session.begin():
                promote(session, session.merge(version))

            # The worker phases run first, so their memory readings are not
            # inflated by the photos the model-only phase decodes in advance.
            measured = []
            for phase, source, chunk_size, rows in (
                ("end to end", f"bench-{variant}", worker.chunk_size, count),
                ("naive", f"bench-{variant}-naive", 1, naive),
            ):
                if rows:
                    measured.append(measure_worker(variant, phase, context, sessions,
                                                   source, chunk_size))
            images = _decoded(photos, model.config.image_size) if photos else None
            model_only = measure_model_only(variant, model, tokenizer, texts, images,
                                            worker)
            del images, model
            for result in measured:
                result.flops = model_only.flops / count * result.declarations
            phases += [model_only, *measured]
        context.photo_pool.shutdown()
        engine.dispose()

    return {
        "machine": describe_machine(device),
        "settings": {
            "chunk_size": worker.chunk_size,
            "max_tokens": worker.max_tokens or micro_batch_limits(device)[0],
            "max_photos": worker.max_photos or micro_batch_limits(device)[1],
            "photo_threads": worker.photo_threads, "bf16_cuda": worker.bf16,
            "bf16_cpu": worker.bf16_cpu,
            "device": str(device), "evidence_cases": len(evidence) if evidence else 0,
        },
        "matmul_peak_flops": peak,
        "matmul_dtype": peak_dtype,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "phases": [
            {**asdict(p), "per_second": round(p.per_second, 1), "mfu": round(p.mfu(peak), 3),
             "rss_growth": None if p.rss_growth is None else round(p.rss_growth, 4)}
            for p in phases
        ],
    }


def read_cases() -> list[tuple[str, str]]:
    """Return the shipped customs cases as (description, 10-digit code)."""
    with CASES.open(encoding="utf-8-sig", newline="") as file:
        return [(row["name"], row["hscode"].zfill(10)) for row in csv.DictReader(file)
                if row["name"].strip()]


def measure_matmul_peak(device: torch.device, worker) -> tuple[float, str]:
    """Return the best FLOP/s of a square matrix multiply, and its dtype.

    The dtype is the one the worker's matrix multiplies run in: bf16 where
    its autocast applies, else float32.
    """
    if device.type == "cuda":
        uses_bf16 = worker.bf16
    else:
        uses_bf16 = worker.bf16 and worker.bf16_cpu and cpu_has_native_bf16()
    dtype = torch.bfloat16 if uses_bf16 else torch.float32
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(3):
        torch.mm(a, b)
        _sync(device)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < MATMUL_SECONDS / 3:
            torch.mm(a, b)
            count += 1
        _sync(device)
        best = max(best, 2 * size**3 * count / (time.perf_counter() - started))
    logger.info("matrix-multiply peak: %.1f GFLOP/s (%s)", best / 1e9, dtype)
    return best, str(dtype).removeprefix("torch.")


def build_evidence(model, tokenizer, cases) -> EvidenceIndex:
    """Embed decided cases into an evidence index with the model's text encoder."""
    texts = [text for text, _ in cases]
    embedded = predict_probabilities(model, tokenizer, texts,
                                     text_embeddings=True).text_embeddings
    return EvidenceIndex(normalize(embedded), [
        EvidenceCase(-1 - i, f"CASE-{i}", text, code)
        for i, (text, code) in enumerate(cases)
    ])


def make_photos(count: int) -> list[bytes]:
    """Return distinct 800 x 600 JPEGs of quality 85, smooth shapes with noise."""
    rng = np.random.default_rng(0)
    width, height = PHOTO_SIZE
    y, x = np.mgrid[0:height, 0:width]
    photos = []
    for number in range(count):
        shade = rng.uniform(0.3, 1.0, size=3)
        pixels = (x[..., None] / width * 160 * shade + y[..., None] / height * 80)
        cx, cy, r = rng.uniform(200, 600), rng.uniform(150, 450), rng.uniform(60, 200)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, size=3)
        pixels += rng.normal(0, 6, size=pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=PHOTO_QUALITY)
        photos.append(buffer.getvalue())
        if number and number % 500 == 0:
            logger.info("made %d of %d photos", number, count)
    return photos


def _store_photos(store, photos: list[bytes]) -> list[str]:
    keys = []
    for data in photos:
        key = photo_key(data, photo_extension(inspect_photo(data)))
        store.put(key, data)
        keys.append(key)
    return keys


def _add_declarations(sessions, source: str, texts: list[str], keys) -> None:
    rows = [
        {"source": source, "reference": f"B{i:08d}", "description": text,
         "hs_code": None, "declared_hs_code": None,
         "image_key": keys[i] if keys else None, "attributes": {}}
        for i, text in enumerate(texts)
    ]
    if not rows:
        return
    with sessions() as session, session.begin():
        for start in range(0, len(rows), 10000):
            insert_declarations(session, rows[start : start + 10000])


def _decoded(photos: list[bytes], size: int) -> list[torch.Tensor]:
    transform = create_eval_transform(size)
    return [transform(decode_photo(data, size)) for data in photos]


@torch.inference_mode()
def measure_model_only(variant, model, tokenizer, texts, images, worker) -> Phase:
    """Time the forward passes over micro-batches prepared beforehand.

    The micro-batches are the worker's: the same token budget, photo cap and
    autocast.
    """
    device = next(model.parameters()).device
    images = images if images is not None else [None] * len(texts)
    plan = plan_batches(model, tokenizer, texts, [i is not None for i in images],
                        max_tokens=worker.max_tokens, max_photos=worker.max_photos)
    batches = [
        batch_inputs(model.config, tokenizer, plan.tokens, images, rows, device,
                     plan.ngrams)
        for rows in plan.batches
    ]

    def forward(inputs):
        with autocast_for(device, worker.bf16, on_cpu=worker.bf16_cpu):
            logits, _ = model.logits_and_text_embedding(**inputs)
        return compute_probabilities(logits, model.parent_index, len(model.labels.headings),
                                     model.config.temperature, model.config.confidence_map)

    forward(batches[0])  # warm-up
    _sync(device)
    started = time.perf_counter()
    for inputs in batches:
        forward(inputs)
    _sync(device)
    seconds = time.perf_counter() - started

    with FlopCounterMode(display=False) as counter:
        for inputs in batches:
            forward(inputs)
    phase = Phase(variant, "model only", len(texts), seconds,
                  flops=float(counter.get_total_flops()))
    logger.info("%s model only: %d declarations in %.1f s", variant, len(texts), seconds)
    return phase


def measure_worker(variant, phase, context, sessions, source, chunk_size) -> Phase:
    """Score a source's declarations through `score_chunk`, chunk by chunk."""
    with sessions() as session, session.begin():
        run = create_run(session, chunk_size, source)
        chunk_ids = pending_chunk_ids(session, run.id)
        total = run.total
        # A worker loads its model once at start, and so does this measurement.
        context.models.get(get_champion(session))
    logger.info("%s %s: scoring %d declarations in %d chunks", variant, phase, total,
                len(chunk_ids))
    latencies, rss_warm, scored = [], None, 0
    started = last_log = time.perf_counter()
    for number, chunk_id in enumerate(chunk_ids):
        chunk_started = time.perf_counter()
        result = score_chunk(context, chunk_id)
        latencies.append(time.perf_counter() - chunk_started)
        scored += result.scored
        if result.failed:
            logger.warning("%s: chunk %d: %d declarations failed", source, chunk_id,
                           result.failed)
        if number == 0:
            rss_warm = current_rss_mb()
        now = time.perf_counter()
        if now - last_log > 30:
            rate = scored / (now - started)
            logger.info("%s %s: %d of %d scored, %.0f/s, %.0f s left", variant, phase,
                        scored, total, rate, (total - scored) / rate if rate else 0)
            last_log = now
    seconds = time.perf_counter() - started
    logger.info("%s %s: %d declarations in %.1f s", variant, phase, scored, seconds)
    return Phase(
        variant, phase, scored, seconds,
        chunk_p50_ms=round(statistics.median(latencies) * 1000, 1),
        chunk_p95_ms=round(_percentile(latencies, 0.95) * 1000, 1),
        rss_warm_mb=rss_warm, rss_end_mb=current_rss_mb(),
    )


def current_rss_mb() -> float:
    """Return this process's resident memory now, in MB."""
    with open("/proc/self/statm") as file:
        pages = int(file.read().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def describe_machine(device: torch.device) -> dict:
    """Return the processor, core count, accelerator and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
    }


def format_results(results: dict) -> str:
    """Return the results as a table with the ratios the targets name."""
    peak = results["matmul_peak_flops"]
    lines = [
        f"machine: {results['machine']}",
        f"settings: {results['settings']}",
        (f"matrix-multiply peak: {peak / 1e9:.1f} GFLOP/s "
         f"({results['matmul_dtype']}); peak RSS {results['peak_rss_mb']} MB"),
        "",
        (f"{'variant':<7} {'phase':<11} {'decl':>7} {'decl/s':>8} {'p50 ms':>8} "
         f"{'p95 ms':>8} {'MFU':>6} {'RSS warm':>9} {'RSS end':>8} {'growth':>7}"),
    ]
    by_key = {}
    for p in results["phases"]:
        by_key[p["variant"], p["phase"]] = p["per_second"]
        growth = "" if p["rss_growth"] is None else f"{p['rss_growth'] * 100:.1f}%"
        lines.append(
            f"{p['variant']:<7} {p['phase']:<11} {p['declarations']:>7} "
            f"{p['per_second']:>8.1f} {_blank(p['chunk_p50_ms']):>8} "
            f"{_blank(p['chunk_p95_ms']):>8} {p['mfu']:>6.3f} "
            f"{_blank(p['rss_warm_mb']):>9} {_blank(p['rss_end_mb']):>8} {growth:>7}"
        )
    lines.append("")
    for variant in ("text", "photo"):
        model = by_key.get((variant, "model only"))
        if not model:
            continue
        end = by_key.get((variant, "end to end"), 0.0)
        naive = by_key.get((variant, "naive"), 0.0)
        lines.append(
            f"{variant}: end to end / model only {end / model:.2f}; "
            f"batched / naive {end / naive if naive else 0.0:.1f}"
        )
    return "\n".join(lines)


def _blank(value) -> str:
    return "" if value is None else str(value)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _throwaway_database(admin_url: str) -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it."""
    admin_url = admin_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    name = f"{DATABASE_PREFIX}_{uuid.uuid4().hex[:12]}"
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)), admin_url)
    try:
        server = admin_url.rsplit("/", 1)[0].removeprefix("postgresql://")
        yield f"postgresql+psycopg2://{server}/{name}"
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)), admin_url)


if __name__ == "__main__":
    sys.exit(main())
