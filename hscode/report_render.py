"""Layout of the accuracy report as self-contained HTML or as Markdown with PNGs."""

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from matplotlib.figure import Figure

from hscode.report_plots import (
    plot_chapters,
    plot_coverage,
    plot_models,
    plot_reliability,
    png,
)

HTML_SUFFIXES = (".html", ".htm")
MARKDOWN_SUFFIXES = (".md", ".markdown")

NOT_MEASURED = "not measured"
MISSING_CELL = "—"

GROUP_TITLES = {"study": "Study models", "baseline": "Baselines", "product": "Product"}
"""Titles of the model groups, in the order the models table lists them."""

CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
tr.group th { background: #e4e9f0; }
tr.strong td { font-weight: bold; background: #fff8e1; }
img { max-width: 100%; }
"""


# The report dict is computed elsewhere, and this module only lays it out. Each
# section becomes a list of blocks (heading, paragraph, table, plot), and one
# writer per format turns the blocks into a file.
@dataclass(frozen=True)
class _Heading:
    text: str
    level: int = 2
    """1 for the report title, 2 for its sections."""


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _Row:
    cells: tuple[str, ...]
    strong: bool = False


@dataclass(frozen=True)
class _GroupLabel:
    """Row that opens a group of table rows, such as "Baselines"."""

    text: str


@dataclass(frozen=True)
class _Table:
    header: tuple[str, ...]
    rows: list[_Row | _GroupLabel] = field(default_factory=list)


@dataclass(frozen=True)
class _Plot:
    name: str
    """File stem of the PNG in the Markdown output."""
    alt: str
    png: bytes


def render_report(report: dict, path: Path) -> list[Path]:
    """Write the report as HTML or Markdown, by suffix, and return the files written.

    Raises:
        ValueError: the suffix is neither HTML nor Markdown.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in HTML_SUFFIXES + MARKDOWN_SUFFIXES:
        accepted = ", ".join(HTML_SUFFIXES + MARKDOWN_SUFFIXES)
        raise ValueError(
            f"unsupported report suffix {path.suffix!r} in {path.name!r}. "
            f"Use one of {accepted}."
        )

    blocks = _build_blocks(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in HTML_SUFFIXES:
        return _write_html(blocks, _text(report.get("title")), path)
    return _write_markdown(blocks, path)


def _build_blocks(report: dict) -> list:
    return [
        *_overview_blocks(report),
        *_target_blocks(report.get("targets") or []),
        *_model_blocks(report.get("models") or []),
        *_chapter_blocks(report.get("chapters") or []),
        *_calibration_blocks(report.get("calibration") or {}),
        *_coverage_blocks(report.get("coverage") or {}),
        *_confusion_blocks(report.get("confused_pairs") or []),
    ]


# ---- Sections -------------------------------------------------------------


def _overview_blocks(report: dict) -> list:
    dataset = report.get("dataset") or {}
    chapters = ", ".join(dataset.get("chapters") or []) or "all"
    counts = ", ".join(
        f"{split} {_count(dataset.get(f'{split}_count'), NOT_MEASURED)}"
        for split in ("train", "validation", "test")
    )
    sentences = [
        f"Generated at {_text(report.get('generated_at'))}.",
        f"Chapters {chapters}.",
        _text(dataset.get("split")),
        f"Declarations: {counts}.",
        f"Evaluation set: {_text(dataset.get('evaluation_set'))}.",
    ]
    return [
        _Heading(_text(report.get("title")), level=1),
        _Paragraph(" ".join(sentences)),
        *[_Paragraph(note) for note in report.get("notes") or [] if note],
    ]


def _target_blocks(targets: list[dict]) -> list:
    status = {True: "met", False: "missed", None: NOT_MEASURED}
    rows = [
        _Row(
            (
                _text(t.get("name")),
                _text(t.get("target")),
                _text(t.get("measured")),
                status[None if t.get("met") is None else bool(t["met"])],
            )
        )
        for t in targets
    ]
    return [
        _Heading("Targets"),
        *_table_or_note(("name", "target", "measured", "status"), rows),
    ]


def _model_blocks(models: list[dict]) -> list:
    header = (
        "model",
        "heading top-1",
        "heading top-3",
        "subheading top-1",
        "subheading top-3",
        "study heading",
        "study subheading",
        "note",
    )
    groups = _group_models(models)
    rows: list[_Row | _GroupLabel] = []
    for group, members in groups:
        rows.append(_GroupLabel(GROUP_TITLES.get(group, group or "Other")))
        rows += [_model_row(model) for model in members]

    # The plot lists the models in the table's order: by group, then as listed.
    listed = [model for _, members in groups for model in members]
    blocks = [_Heading("Models side by side (the study's Table 2 layout)")]
    blocks += _table_or_note(header, rows)
    blocks += _plot_or_note(
        "models",
        "Heading and subheading top-1 accuracy per model",
        plot_models(listed, [_model_label(model) for model in listed]),
    )
    return blocks


def _group_models(models: list[dict]) -> list[tuple[str, list[dict]]]:
    """Group models in `GROUP_TITLES` order, then unknown groups as they appear."""
    order = list(GROUP_TITLES)
    order += [
        g for g in dict.fromkeys(m.get("group") for m in models) if g not in order
    ]
    groups = [(g, [m for m in models if m.get("group") == g]) for g in order]
    return [(g, members) for g, members in groups if members]


def _model_row(model: dict) -> _Row:
    label = _model_label(model)
    metrics = (
        "heading_top1",
        "heading_top3",
        "subheading_top1",
        "subheading_top3",
        "study_heading",
        "study_subheading",
    )
    cells = (
        label,
        *[_percent(model.get(m)) for m in metrics],
        _cell(model.get("note")),
    )
    return _Row(cells, strong=bool(model.get("default")))


def _model_label(model: dict) -> str:
    label = _text(model.get("label") or model.get("name"))
    return f"{label} (champion)" if model.get("default") else label


def _chapter_blocks(chapters: list[dict]) -> list:
    header = ("chapter", "declarations", "heading accuracy", "subheading accuracy")
    rows = [
        _Row(
            (
                _text(c.get("chapter")),
                _count(c.get("count")),
                _percent(c.get("heading_accuracy")),
                _percent(c.get("subheading_accuracy")),
            )
        )
        for c in chapters
    ]
    return [
        _Heading("Accuracy per chapter"),
        *_table_or_note(header, rows),
        *_plot_or_note(
            "chapters",
            "Heading and subheading accuracy per chapter",
            plot_chapters(
                chapters, [f"chapter {_text(c.get('chapter'))}" for c in chapters]
            ),
        ),
    ]


def _calibration_blocks(calibration: dict) -> list:
    temperature = calibration.get("temperature")
    temperature_text = NOT_MEASURED if temperature is None else f"{temperature:.3f}"
    mapping = calibration.get("confidence_map")
    mapping_text = (
        "" if not mapping else
        f" Then the best heading's probability c becomes sigmoid({mapping[0]:.2f} "
        f"* logit(c) {'-' if mapping[1] < 0 else '+'} {abs(mapping[1]):.2f}), and the "
        "subheadings of the other headings are scaled to fill the rest."
    )
    sentence = (
        f"Temperature: {temperature_text}.{mapping_text} "
        "Expected calibration error (ECE) of the heading probability, 15 bins: "
        f"{_decimal(calibration.get('ece'))} calibrated, "
        f"{_decimal(calibration.get('ece_uncalibrated'))} before."
    )
    return [
        _Heading("Calibration"),
        _Paragraph(sentence),
        *_plot_or_note(
            "calibration",
            "Reliability diagram: accuracy per heading-confidence bin",
            plot_reliability(calibration.get("bins") or []),
        ),
    ]


def _coverage_blocks(coverage: dict) -> list:
    target = coverage.get("target_precision")
    share = coverage.get("auto_accept_share")
    threshold = coverage.get("auto_accept_threshold")
    if share is None:
        sentence = (
            f"No heading-probability threshold reaches {_percent_short(target)} "
            "heading precision, so no declaration can be auto-accepted."
        )
    else:
        condition = (
            "heading-probability threshold not measured"
            if threshold is None
            else f"heading probability at least {threshold:.3f}"
        )
        sentence = (
            f"At {_percent_short(target)} heading precision, {_percent(share)} of "
            f"declarations can be auto-accepted ({condition})."
        )
    return [
        _Heading("Auto-accept coverage"),
        _Paragraph(sentence),
        *_plot_or_note(
            "coverage",
            "Heading precision against auto-accept coverage",
            plot_coverage(coverage),
        ),
    ]


def _confusion_blocks(pairs: list[dict]) -> list:
    header = ("decided", "name", "predicted", "name", "count")
    rows = [
        _Row(
            (
                _text(p.get("decided")),
                _cell(p.get("decided_name")),
                _text(p.get("predicted")),
                _cell(p.get("predicted_name")),
                _count(p.get("count")),
            )
        )
        for p in pairs
    ]
    return [_Heading("Most confused headings"), *_table_or_note(header, rows)]


def _table_or_note(header: tuple[str, ...], rows: list) -> list:
    if not rows:
        return [
            _Paragraph("Not measured, because the report has no rows for this table.")
        ]
    return [_Table(header, rows)]


def _plot_or_note(name: str, alt: str, figure: Figure | None) -> list:
    if figure is None:
        return [_Paragraph("No plot, because none of its values were measured.")]
    return [_Plot(name, alt, png(figure))]


# ---- Writers --------------------------------------------------------------


def _write_html(blocks: list, title: str, path: Path) -> list[Path]:
    body = "\n".join(_html_block(block) for block in blocks)
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return [path]


def _html_block(block) -> str:
    if isinstance(block, _Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, _Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, _Plot):
        data = base64.b64encode(block.png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(block.alt)}"></figure>'
        )
    header = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
    rows = [f"<tr>{header}</tr>"]
    for row in block.rows:
        if isinstance(row, _GroupLabel):
            label = f'<th colspan="{len(block.header)}">{html.escape(row.text)}</th>'
            rows.append(f'<tr class="group">{label}</tr>')
            continue
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in row.cells)
        rows.append(
            f'<tr class="strong">{cells}</tr>' if row.strong else f"<tr>{cells}</tr>"
        )
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _write_markdown(blocks: list, path: Path) -> list[Path]:
    folder = path.with_name(f"{path.stem}_files")
    plots = [b for b in blocks if isinstance(b, _Plot)]
    written = [path]
    if plots:
        folder.mkdir(exist_ok=True)
    for plot in plots:
        png_path = folder / f"{plot.name}.png"
        png_path.write_bytes(plot.png)
        written.append(png_path)

    lines = [_markdown_block(block, folder.name) for block in blocks]
    path.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    return written


def _markdown_block(block, folder: str) -> str:
    if isinstance(block, _Heading):
        return f"{'#' * block.level} {_markdown_text(block.text)}"
    if isinstance(block, _Paragraph):
        return _markdown_text(block.text)
    if isinstance(block, _Plot):
        return f"![{block.alt}]({quote(folder)}/{block.name}.png)"
    lines = [
        _markdown_row(block.header),
        _markdown_row(["---"] * len(block.header)),
    ]
    for row in block.rows:
        if isinstance(row, _GroupLabel):
            cells = [f"**{_markdown_cell(row.text)}**"] + [""] * (len(block.header) - 1)
            lines.append("| " + " | ".join(cells) + " |")
        elif row.strong:
            lines.append(
                "| " + " | ".join(f"**{_markdown_cell(c)}**" for c in row.cells) + " |"
            )
        else:
            lines.append(_markdown_row(row.cells))
    return "\n".join(lines)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_markdown_cell(c) for c in cells) + " |"


def _markdown_cell(text: str) -> str:
    # A pipe would end the cell and a newline the row.
    return _markdown_text(text).replace("|", r"\|").replace("\n", " ")


def _markdown_text(text: str) -> str:
    # Markdown renders inline HTML, so a "<" in report text must not open a tag.
    return text.replace("<", "&lt;")


# ---- Values ---------------------------------------------------------------


def _text(value) -> str:
    return NOT_MEASURED if value is None else str(value)


def _cell(value) -> str:
    return MISSING_CELL if value is None or value == "" else str(value)


def _percent(value: float | None) -> str:
    return MISSING_CELL if value is None else f"{value * 100:.1f}%"


def _percent_short(value: float | None) -> str:
    """Format 0.97 as "97%" and 0.975 as "97.5%"."""
    return NOT_MEASURED if value is None else f"{value * 100:.4g}%"


def _decimal(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.3f}"


def _count(value: int | None, missing: str = MISSING_CELL) -> str:
    return missing if value is None else f"{value:,}"
