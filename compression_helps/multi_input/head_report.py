"""Scores of the trained heads against their control, as numbers and a plot.

SPEC.md ("Multi-input model: heads and their control"): every head and the
backbone alone are scored on the same held-out images by the evaluation's
rank rule, over all classes and restricted to the classes present in the
data; each head's gain over the single-input control carries a paired
bootstrap interval over the held-out images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

from compression_helps.core import files
from compression_helps.engine import ranking
from compression_helps.multi_input import heads

__all__ = [
    "BACKBONE",
    "BOOTSTRAP_RESAMPLES",
    "CONFIDENCE",
    "EPOCHS_PLOT",
    "METRICS",
    "accuracy",
    "compare",
    "correct",
    "epochs_figure",
    "format_table",
    "summarize",
    "write_epochs_plot",
]

BACKBONE = "backbone"
CONFIDENCE = 0.9
BOOTSTRAP_RESAMPLES = 10_000
EPOCHS_PLOT = "heldout_top1_per_epoch.png"
# Top-k over all classes, and over the classes present in the data only.
METRICS = ("top1", "top5", "top1_present", "top5_present")


def correct(
    probabilities: np.ndarray,
    labels: np.ndarray,
    present: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Per image: is the label in the top 1 / top 5 (SPEC.md, "Ranks")?

    Args:
      probabilities: `[N, C]`.
      labels: `[N]` class indices in [0, C).
      present: the classes present in the data; None: skip the restricted
        metrics.

    Returns:
      `{metric: [N] bool}` for `METRICS` (the `_present` ones ranking only
      the classes in `present`).
    """
    ranks = {"": ranking.ranks_of(probabilities, labels).numpy()}
    if present is not None:
        # -1: below any probability, so an absent class never outranks.
        restricted = np.full_like(probabilities, -1.0)
        restricted[:, present] = probabilities[:, present]
        ranks["_present"] = ranking.ranks_of(restricted, labels).numpy()
    return {
        f"top{k}{suffix}": rank <= k
        for suffix, rank in ranks.items()
        for k in (1, ranking.TOP_K)
    }


def accuracy(
    probabilities: np.ndarray,
    labels: np.ndarray,
    present: Sequence[int] | None = None,
) -> dict[str, float]:
    """`correct`, averaged: top-k accuracy in percent."""
    return {
        name: 100.0 * float(np.mean(hit)) if len(hit) else float("nan")
        for name, hit in correct(probabilities, labels, present).items()
    }


def compare(
    hits: np.ndarray, control_hits: np.ndarray, seed: int = 0
) -> dict[str, float | list[float]]:
    """A head's gain over the control on the same images, with its interval.

    The paired bootstrap resamples images: each resample's gain is the mean
    of the per-image differences `hits - control_hits` over the resampled
    images (percentile interval, `CONFIDENCE`).

    Args:
      hits: `[N]` bool, the head's per-image result.
      control_hits: `[N]` bool, the control's on the same images.
      seed: the resampling seed.

    Returns:
      `{"gain": points, "interval": [low, high]}` in percentage points.
    """
    difference = 100.0 * (hits.astype(float) - control_hits.astype(float))
    if len(difference) < 2:
        return {"gain": float(np.mean(difference)), "interval": [None, None]}
    interval = scipy.stats.bootstrap(
        (difference,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return {
        "gain": float(np.mean(difference)),
        "interval": [float(interval.low), float(interval.high)],
    }


def summarize(
    probabilities: Mapping[str, np.ndarray],
    labels: np.ndarray,
    present: Sequence[int],
    seed: int = 0,
) -> dict:
    """Scores of the backbone and every head, and each head's gain.

    Args:
      probabilities: `{name: [N, C]}` on the held-out images: `BACKBONE`
        and the trained heads.
      labels: `[N]` their labels.
      present: the classes present in the data.
      seed: the bootstrap's seed.

    Returns:
      `{"scores": {name: accuracy}, "versus_single_input": {head: {metric:
      compare}}}`; the comparison is empty without a single-input head.
    """
    hits = {
        name: correct(p, labels, present) for name, p in probabilities.items()
    }
    scores = {
        name: {m: 100.0 * float(np.mean(h)) for m, h in hit.items()}
        for name, hit in hits.items()
    }
    versus = {}
    if heads.SINGLE_INPUT in hits:
        control = hits[heads.SINGLE_INPUT]
        versus = {
            name: {m: compare(hit[m], control[m], seed) for m in METRICS}
            for name, hit in hits.items()
            if name not in (heads.SINGLE_INPUT, BACKBONE)
        }
    return {"scores": scores, "versus_single_input": versus}


def _interval(value: dict) -> str:
    low, high = value["interval"]
    if low is None:
        return f"{value['gain']:+.2f}"
    return f"{value['gain']:+.2f} [{low:+.2f}, {high:+.2f}]"


def format_table(summary: Mapping) -> str:
    """A Markdown table: one row per model, top-1/top-5 and the gain.

    Args:
      summary: `summarize` output.

    Returns:
      The table, with the gain over the single-input head (90% paired
      bootstrap interval) in points of top-1, all classes and present ones.
    """
    versus = summary["versus_single_input"]
    lines = [
        "| model | top-1 | top-5 | top-1 (present classes) | "
        "top-5 (present classes) | top-1 - single-input | "
        "top-1 (present) - single-input |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, score in summary["scores"].items():
        gain = versus.get(name)
        gains = (
            [_interval(gain["top1"]), _interval(gain["top1_present"])]
            if gain
            else ["", ""]
        )
        cells = [f"{score[m]:.2f}" for m in METRICS] + gains
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def epochs_figure(rows: Sequence[Mapping], scores: Mapping, title: str):
    """Held-out top-1 after every epoch, one line per head.

    Args:
      rows: `metrics.jsonl` lines (`epoch`, `val_<head>_top1` as a
        fraction).
      scores: `summarize(...)["scores"]`; the backbone alone is a flat line.
      title: plot title.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure  # No pyplot global state.

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    for i, name in enumerate(n for n in scores if n != BACKBONE):
        key = f"val_{name}_top1"
        logged = [row for row in rows if key in row]
        ax.plot(
            [row["epoch"] for row in logged],
            [100 * row[key] for row in logged],
            "o-",
            color=f"C{i}",
            label=name,
        )
    if BACKBONE in scores:
        ax.axhline(
            scores[BACKBONE]["top1"],
            color="black",
            linestyle="--",
            label="backbone alone",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def write_epochs_plot(
    metrics_path: str, scores: Mapping, path: str, title: str
) -> None:
    """`epochs_figure` of a run's metrics log, written to `path`."""
    rows = files.read_jsonl(metrics_path)
    epochs_figure(rows, scores, title).savefig(path, dpi=120)
