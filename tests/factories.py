"""Small manifests of real customs cases, with photos made on the fly."""

import csv
import io
from collections import defaultdict
from pathlib import Path

from PIL import Image

CASES = Path(__file__).resolve().parents[1] / "data" / "kcs-cases" / "cases.csv"
HEADINGS = ("8471", "8517", "8528", "9018")
"""Headings with many decided cases: computers, phones, monitors, medical devices."""
COLOURS = {"8471": (200, 30, 30), "8517": (30, 200, 30), "8528": (30, 30, 200),
           "9018": (220, 220, 30)}


def read_cases(headings=HEADINGS, per_heading: int = 15) -> list[dict[str, str]]:
    """Return the first `per_heading` real cases of each heading."""
    picked: dict[str, list[dict[str, str]]] = defaultdict(list)
    with CASES.open(encoding="utf-8-sig", newline="") as file:
        for row in csv.DictReader(file):
            code = row["hscode"].zfill(10)
            heading = code[:4]
            if heading in headings and len(picked[heading]) < per_heading:
                picked[heading].append({"name": row["name"], "hscode": code})
    return [row for heading in headings for row in picked[heading]]


def jpeg_bytes(colour: tuple[int, int, int], size=(80, 60)) -> bytes:
    """Return a solid-colour JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def write_manifest(
    folder: Path, per_heading: int = 15, photo_every: int = 0, declared_every: int = 0
) -> Path:
    """Write `manifest.csv` in the manifest format, with photos beside it.

    Every `photo_every`-th row gets a photo in its heading's colour; every
    `declared_every`-th row declares a code of another heading.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    cases = read_cases(per_heading=per_heading)
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(
            file,
            ["reference", "description", "hs_code", "declared_hs_code", "image"],
        )
        writer.writeheader()
        seen: dict[str, int] = defaultdict(int)
        for number, case in enumerate(cases, start=1):
            heading = case["hscode"][:4]
            seen[heading] += 1
            image = ""
            if photo_every and number % photo_every == 0:
                image = f"photos/{number}.jpg"
                (folder / "photos").mkdir(exist_ok=True)
                (folder / image).write_bytes(jpeg_bytes(COLOURS[heading]))
            declared = case["hscode"]
            if declared_every and number % declared_every == 0:
                declared = "8543709000" if heading != "8543" else "8471300000"
            writer.writerow({
                # Stable across manifest sizes, so a larger one extends a smaller.
                "reference": f"D{heading}-{seen[heading]:03d}",
                "description": case["name"],
                "hs_code": case["hscode"],
                "declared_hs_code": declared,
                "image": image,
            })
    return path
