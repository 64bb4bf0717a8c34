"""The paper-style result table of Yang et al. 2021, its files and plot.

Rows: the original, each QF, HRS, the label-free selectors and the
confidence selector at each threshold; columns: top-1 %, top-5 %, compression
ratio against the original files (SPEC.md) and mean candidate size. Several
models evaluated on the same candidates are compared in a summary: the same
rows, top-1, top-5 and CR of each model side by side (`summary_markdown`),
and every model's rows in one CSV file (`write_summary`).
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from compression_helps.core import files, rundir
from compression_helps.engine import candidates, metrics, ranking
from compression_helps.selection import selectors

__all__ = [
    "CONFIDENCE_THRESHOLDS",
    "COLUMNS",
    "REPORT_FILE",
    "SUMMARY_CSV",
    "SUMMARY_MARKDOWN",
    "accuracy_vs_cr_figure",
    "plot_accuracy_vs_cr",
    "selections",
    "summarize",
    "summary_markdown",
    "to_markdown",
    "write_report",
    "write_summary",
]

CONFIDENCE_THRESHOLDS = (0.5, 0.7, 0.9)
COLUMNS = ("name", "top1", "top5", "cr", "mean_bytes", "bpp")
REPORT_FILE = "report.json"
SUMMARY_CSV = "summary.csv"  # One row per model and table row.
SUMMARY_MARKDOWN = "summary.md"  # The side-by-side table.


def selections(predictions: ranking.Predictions) -> dict[str, np.ndarray]:
    """Every row's chosen candidate per image, in table order."""
    p = predictions
    chosen = {
        str(name): selectors.fixed(j, p.num_images)
        for j, name in enumerate(p.names)
    }
    chosen["hrs"] = selectors.highest_rank(p.ranks, p.sizes)
    chosen["keep_top1"] = selectors.keep_top1(p.topk, p.sizes)
    chosen["keep_top5"] = selectors.keep_top5(p.topk, p.sizes)
    chosen["keep_both"] = selectors.keep_top1_and_top5(p.topk, p.sizes)
    for threshold in CONFIDENCE_THRESHOLDS:
        chosen[f"confident_{threshold}"] = selectors.confident(
            p.topk, p.topk_probs, p.sizes, threshold
        )
    return chosen


def summarize(predictions: ranking.Predictions) -> list[dict]:
    """One dict per table row: name, top1, top5 (%), cr, mean_bytes, bpp."""
    rows = []
    for name, chosen in selections(predictions).items():
        rows.append(
            {
                "name": name,
                "top1": metrics.topk_accuracy(predictions.ranks, chosen, 1),
                "top5": metrics.topk_accuracy(predictions.ranks, chosen, 5),
                "cr": metrics.compression_ratio(predictions.sizes, chosen),
                "mean_bytes": float(
                    metrics.chosen_values(predictions.sizes, chosen).mean()
                ),
                "bpp": metrics.bits_per_pixel(
                    predictions.sizes, chosen, predictions.num_pixels
                ),
            }
        )
    return rows


def to_markdown(rows: list[dict]) -> str:
    """The table as markdown: top-1 %, top-5 %, CR, mean KiB, bpp."""
    lines = [
        "| candidate / selector | top-1 % | top-5 % | CR | mean KiB | bpp |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['top1']:.2f} | {row['top5']:.2f} | "
            f"{row['cr']:.2f} | {row['mean_bytes'] / 1024:.1f} | "
            f"{row['bpp']:.3f} |"
        )
    return "\n".join(lines)


def accuracy_vs_cr_figure(rows: list[dict], num_candidates: int, title: str):
    """Top-1 against CR: the JPEG curve, the original and the selectors.

    The QF candidates are one line in order of CR (QF 100 can be larger
    than the original, so joining the original in would double the line
    back); the original and each selector are markers of their own; the
    legend is outside the axes, so it hides no point.

    Args:
      rows: `summarize` output; the first `num_candidates` are the single
        candidates (original, QF 100, ...), the rest selectors.
      num_candidates: V.
      title: plot title.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    # The object-oriented API: no pyplot global state, Agg from the suffix.
    from matplotlib import ticker
    from matplotlib.figure import Figure

    singles, others = rows[:num_candidates], rows[num_candidates:]
    originals = [r for r in singles if r["name"] == candidates.ORIGINAL]
    qfs = sorted(
        (r for r in singles if r["name"] != candidates.ORIGINAL),
        key=lambda r: r["cr"],
    )
    figure = Figure(figsize=(9, 4.8), layout="constrained")
    ax = figure.subplots()
    ax.plot(
        [r["cr"] for r in qfs],
        [r["top1"] for r in qfs],
        "o-",
        color="tab:blue",
        markersize=4,
        label="every image at one JPEG QF\n(numbers: the QF)",
    )
    for r in qfs:
        ax.annotate(
            r["name"].removeprefix("qf"),
            (r["cr"], r["top1"]),
            fontsize=7,
            color="tab:blue",
            textcoords="offset points",
            xytext=(0, -11),
            ha="center",
        )
    for r in originals:
        ax.plot(
            r["cr"],
            r["top1"],
            "*",
            color="black",
            markersize=10,
            label="original files",
        )
    markers = "sD^vP<>Xph"
    for i, r in enumerate(others):
        ax.plot(
            r["cr"],
            r["top1"],
            markers[i % len(markers)],
            color=f"C{(i + 1) % 10}",
            label=r["name"],
        )
    ax.set_xscale("log")
    # Plain numbers at 1, 2, 5 x 10^k, not powers of ten.
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("compression ratio vs original files (log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    figure.legend(loc="outside right upper", fontsize=8)
    return figure


def plot_accuracy_vs_cr(
    rows: list[dict], num_candidates: int, path: str, title: str
) -> None:
    """Writes `accuracy_vs_cr_figure` as a PNG.

    Args:
      rows: `summarize` output (candidates first).
      num_candidates: V.
      path: PNG to write.
      title: plot title.
    """
    accuracy_vs_cr_figure(rows, num_candidates, title).savefig(path, dpi=120)


def write_report(
    predictions: ranking.Predictions,
    run: rundir.RunDir,
    model_name: str,
    errors_by_reason: dict[str, int] | None = None,
    folder: str = "",
) -> dict:
    """Writes report.json, report.csv and accuracy_vs_cr.png, atomically.

    Args:
      predictions: the evaluation results.
      run: the run directory.
      model_name: shown in the report and plot.
      errors_by_reason: skipped images counted by reason.
      folder: where in the run directory (e.g. the model's folder).

    Returns:
      The report dict (as in report.json).
    """
    rows = summarize(predictions)
    errors_by_reason = dict(errors_by_reason or {})
    report = {
        "model": model_name,
        "n_images": predictions.num_images,
        "n_errors": sum(errors_by_reason.values()),
        "errors_by_reason": errors_by_reason,
        "rows": rows,
    }
    run.write_json(os.path.join(folder, REPORT_FILE), report)
    run.write_text(os.path.join(folder, "report.csv"), _csv(rows, COLUMNS))
    plot_path = run.path(os.path.join(folder, "accuracy_vs_cr.png"))
    with files.atomic_path(plot_path) as tmp_path:
        plot_accuracy_vs_cr(
            rows,
            len(predictions.names),
            tmp_path,
            f"{model_name}, {predictions.num_images} images",
        )
    return report


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return table.getvalue()


def summary_markdown(reports: dict[str, dict]) -> str:
    """Several models' tables side by side: top-1 %, top-5 %, CR of each.

    Args:
      reports: `write_report` dicts by model, of the same candidates and
        images (so the same rows).

    Returns:
      A markdown table: one row per candidate or selector, three columns
      per model.
    """
    models = list(reports)
    header = ["candidate / selector"]
    for model in models:
        header += [f"{model} top-1 %", f"{model} top-5 %", f"{model} CR"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    by_model = [reports[m]["rows"] for m in models]
    for rows in zip(*by_model, strict=True):
        cells = [rows[0]["name"]]
        for row in rows:
            cells += [f"{row['top1']:.2f}", f"{row['top5']:.2f}"]
            cells.append(f"{row['cr']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(run: rundir.RunDir, reports: dict[str, dict]) -> None:
    """Writes summary.md (`summary_markdown`) and summary.csv, atomically.

    summary.csv is for other tools: a `model` column, then the columns of
    each model's report.csv, every model's rows one after the other.

    Args:
      run: the run directory.
      reports: `write_report` dicts by model.
    """
    run.write_text(SUMMARY_MARKDOWN, summary_markdown(reports) + "\n")
    rows = [
        {"model": model, **row}
        for model, result in reports.items()
        for row in result["rows"]
    ]
    run.write_text(SUMMARY_CSV, _csv(rows, ("model", *COLUMNS)))
