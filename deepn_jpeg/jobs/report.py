"""DeepN-JPEG's printed tables and plots: design, rate-accuracy, fitting.

Mirrors `compression_helps/report.py`: the jobs compute, this module shows.
"""

from __future__ import annotations

import numpy as np

from deepn_jpeg.analysis import statistics
from deepn_jpeg.jpeg import tables

__all__: list[str] = [
    "design_summary",
    "plot_design",
    "fit_summary_text",
    "plot_rate_accuracy",
    "rate_accuracy_figure",
    "rate_accuracy_text",
    "same_curves",
]

# --- design (design_qtable.py) ---


def design_summary(
    stats: statistics.BandStatistics,
    qtables: dict[str, tuple[np.ndarray, np.ndarray]],
    reference_quality: int = 50,
) -> str:
    """The std and tables of a design run as 8x8 grids, for printing.

    Args:
      stats: band statistics.
      qtables: variant -> `(luma, chroma)`.
      reference_quality: QF of the standard tables shown last.

    Returns:
      The text.
    """
    lines = [
        f"{stats.num_images} images, {stats.count('luma')} luma and "
        f"{stats.count('chroma')} chroma 8x8 blocks "
        f"(chroma {stats.chroma_subsampling})"
    ]
    sections = [
        ("luma std", stats.std("luma"), "{:7.2f}"),
        ("chroma std (Cb, Cr pooled)", stats.std("chroma"), "{:7.2f}"),
    ]
    for variant, (luma, chroma) in qtables.items():
        sections.append((f"luma table, PLM {variant}", luma, "{:4d}"))
        sections.append((f"chroma table, PLM {variant}", chroma, "{:4d}"))
    luma, chroma = tables.standard_qtables(reference_quality)
    sections.append((f"JPEG luma table, QF {reference_quality}", luma, "{:4d}"))
    sections.append(
        (f"JPEG chroma table, QF {reference_quality}", chroma, "{:4d}")
    )
    for title, grid, fmt in sections:
        lines += ["", f"{title}:", tables.format_qtable(grid, fmt)]
    return "\n".join(lines)


def plot_design(
    path: str,
    stats: statistics.BandStatistics,
    qtables: dict[str, tuple[np.ndarray, np.ndarray]],
    reference_quality: int = 50,
) -> None:
    """Heat-maps of the luma/chroma std and of the tables vs standard JPEG.

    Rows: std; one row per PLM variant; standard JPEG at `reference_quality`.
    Columns: luma, chroma. Each cell shows its value.

    Args:
      path: output PNG (callers pass a `rundir.atomic_path`).
      stats: band statistics.
      qtables: variant -> `(luma, chroma)`.
      reference_quality: QF of the standard tables.
    """
    # The object-oriented API: no pyplot global state, Agg from the suffix.
    from matplotlib import colors
    from matplotlib.figure import Figure

    rows = [
        ("std", (stats.std("luma"), stats.std("chroma")), "{:.0f}"),
        *((f"PLM {name}", pair, "{:d}") for name, pair in qtables.items()),
        (
            f"JPEG QF {reference_quality}",
            tables.standard_qtables(reference_quality),
            "{:d}",
        ),
    ]
    figure = Figure(figsize=(7.5, 3.4 * len(rows)))
    axes = figure.subplots(len(rows), 2, squeeze=False)
    for (title, pair, fmt), row_axes in zip(rows, axes, strict=True):
        for name, grid, ax in zip(
            ("luma", "chroma"), pair, row_axes, strict=True
        ):
            grid = np.asarray(grid)
            if title == "std":  # The DC band dwarfs the rest: log scale.
                norm = colors.LogNorm(max(grid.min(), 1e-3), grid.max())
            else:
                norm = colors.Normalize(0, 255)
            image = ax.imshow(grid, cmap="viridis", norm=norm)
            figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            ax.set_title(f"{name} {title}")
            ax.set_xticks(range(8))
            ax.set_yticks(range(8))
            ax.set_xlabel("horizontal frequency v")
            ax.set_ylabel("vertical frequency u")
            for (u, v), value in np.ndenumerate(grid):
                ax.text(
                    v,
                    u,
                    fmt.format(value.item()),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if norm(value) > 0.5 else "white",
                )
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# --- rate-accuracy (eval_deepn_jpeg.py) ---


def _curve_label_and_style(curve: str, diagnostic: bool) -> tuple[str, str]:
    if curve == "jpeg":
        return "standard JPEG", "o-"
    if curve in tables.PLM_VARIANTS:
        return f"DeepN {curve}", "s--"
    return curve, "^:" if diagnostic else "d-."


def same_curves(curve_points: dict[str, list[dict]]) -> list[list[str]]:
    """The curves (but the original) grouped by identical points, in order.

    Tables that quantize alike (e.g. the PLM's "paper" and "monotone"
    variants on statistics where they differ in no step) give the same
    files, so the same bytes and accuracies.

    Args:
      curve_points: curve name -> its points (`comparison.curves`).

    Returns:
      One list of curve names per distinct curve, in first-seen order.
    """
    groups: dict[tuple, list[str]] = {}
    for curve, points in curve_points.items():
        if curve == "original":
            continue
        key = tuple(
            sorted(
                (p.get("quality"), p["bpp"], p["top1"], p["top5"])
                for p in points
            )
        )
        groups.setdefault(key, []).append(curve)
    return list(groups.values())


def rate_accuracy_figure(result: dict):
    """Top-1 and top-5 against bits per pixel, one line per distinct curve.

    Args:
      result: the dict `rate_accuracy.run` returns.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    # The object-oriented API: no pyplot global state, Agg from the suffix.
    from matplotlib import ticker
    from matplotlib.figure import Figure

    curve_points = result["curves"]
    original = curve_points["original"][0]
    diagnostic = set(result.get("diagnostic_curves", ()))
    figure = Figure(figsize=(13, 6.5), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, key in zip(axes, ("top1", "top5"), strict=True):
        for names in same_curves(curve_points):
            ordered = sorted(curve_points[names[0]], key=lambda p: p["bpp"])
            labels, styles = zip(
                *(_curve_label_and_style(n, n in diagnostic) for n in names),
                strict=True,
            )
            # One line for curves that coincide, named after all of them:
            # a second line would hide under the first.
            label, style = " = ".join(labels), styles[0]
            ax.plot(
                [p["bpp"] for p in ordered],
                [p[key] for p in ordered],
                style,
                label=label,
                markersize=4,
            )
        ax.axhline(
            original[key],
            color="gray",
            lw=0.8,
            label=f"original files ({original['bpp']:.2f} bpp)",
        )
        if key == "top1" and result.get("verdict"):
            # The band is the same for every curve: where the verdict's
            # bytes ratio is averaged.
            low, high = result["verdict"][0]["band"]
            ax.axhspan(
                low,
                high,
                color="gold",
                alpha=0.2,
                label=f"verdict band (top-1 {low:.1f}-{high:.1f} %)",
            )
        ax.set_xscale("log")
        # Plain numbers at 1, 2, 5 x 10^k: the default labels overlap.
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("bits per pixel (log scale)")
        ax.set_ylabel(f"{key} accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    # One legend for both, below them: it hides no point.
    figure.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncol=4,
        fontsize=8,
    )
    figure.suptitle(f"{result['model']}, {result['n_images']} images")
    return figure


def plot_rate_accuracy(result: dict, path: str) -> None:
    """Writes `rate_accuracy_figure` as a PNG.

    Args:
      result: the dict `rate_accuracy.run` returns.
      path: output PNG (callers pass a `rundir.atomic_path`).
    """
    rate_accuracy_figure(result).savefig(path, dpi=120)


def _gain_cell(gain: dict) -> str:
    if gain["gain"] is None:
        return "n/a"
    interval = gain.get("interval")
    if interval is None or interval["low"] is None:
        return f"{gain['gain']:.2f}x"
    return (
        f"{gain['gain']:.2f}x [{interval['low']:.2f}, {interval['high']:.2f}]"
    )


def _verdict_lines(result: dict) -> list[str]:
    """The band gain of each curve, its interval and call, as markdown."""
    lines = [
        "",
        "verdict: band gain = geometric mean of JPEG bytes / curve bytes "
        "over the top-1 band (the original's top-1 minus the band drops), "
        "on each curve's monotone frontier; [5th, 95th percentile over "
        f"{result.get('bootstrap', 0)} paired bootstrap resamples of the "
        "images where both curves cover the band]; defined: the share of "
        "resamples where they do",
        "",
        "| curve | band top-1 % | gain | 90% interval | defined | call |",
        "|---|---|---:|---|---:|---|",
    ]
    for v in result["verdict"]:
        band = f"{v['band'][0]:.2f}-{v['band'][1]:.2f}"
        gain = "n/a" if v["gain"] is None else f"{v['gain']:.2f}x"
        interval = defined = ""
        if v["low"] is not None:
            interval = f"[{v['low']:.2f}, {v['high']:.2f}]"
        if v["defined"] is not None:
            defined = f"{100 * v['defined']:.0f}%"
        call = v["call"]
        if v["gain"] is None:  # Say which curve misses the band.
            ranges = (v["top1_range"], v["jpeg_top1_range"])
            call += " (top-1 {:.2f}-{:.2f}, JPEG {:.2f}-{:.2f})".format(
                *ranges[0], *ranges[1]
            )
        lines.append(
            f"| {v['curve']} | {band} | {gain} | {interval} | {defined} "
            f"| {call} |"
        )
    return lines


def rate_accuracy_text(result: dict) -> str:
    """The curves, gains and verdict of `rate_accuracy.run` as markdown."""
    lines = [
        "| curve | quality | top-1 % | top-5 % | bpp | CR |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for curve, points in result["curves"].items():
        for p in points:
            quality = "" if p["quality"] is None else p["quality"]
            lines.append(
                f"| {curve} | {quality} | {p['top1']:.2f} | {p['top5']:.2f} "
                f"| {p['bpp']:.3f} | {p['cr']:.2f} |"
            )
    # Gains as one row per curve, one column per target top-1.
    targets = sorted({g["target_top1"] for g in result["gains"]}, reverse=True)
    rows: dict[str, dict[float, dict]] = {}
    for g in result["gains"]:
        rows.setdefault(g["curve"], {})[g["target_top1"]] = g
    lines += [
        "",
        "gain at equal top-1 = JPEG bytes / curve bytes (n/a: the curve "
        "does not cross the target within its grid); [5th, 95th percentile "
        f"over {result.get('bootstrap', 0)} paired bootstrap resamples of "
        "the images, where both curves reach the target]",
        "",
        "| curve | " + " | ".join(f"top-1 {t:.2f}" for t in targets) + " |",
        "|---|" + "---:|" * len(targets),
    ]
    if rows:
        first = next(iter(rows.values()))
        kib = [first[t]["jpeg_bytes"] for t in targets]
        lines.append(
            "| JPEG KiB | "
            + " | ".join("n/a" if b is None else f"{b / 1024:.0f}" for b in kib)
            + " |"
        )
    for curve, by_target in rows.items():
        cells = [_gain_cell(by_target[t]) for t in targets]
        lines.append(f"| {curve} | " + " | ".join(cells) + " |")
    if result.get("verdict"):
        lines += _verdict_lines(result)
    return "\n".join(lines)


# --- fitting (fit_qtable.py) ---


def fit_summary_text(summary: dict) -> str:
    """The table search's result per budget, on the fit images, as markdown.

    Args:
      summary: the dict `fit.run` returns (and writes to fit_summary.json).

    Returns:
      A table: standard JPEG, each family's start and fitted tables.
    """
    original = summary["original"]
    lines = [
        f"fit images: {summary['n_images']} ({summary['images']}); original "
        f"files: {original['bytes'] / 1024:.0f} KiB, top-1 "
        f"{original['top1']:.2f} %, top-5 {original['top5']:.2f} %",
        "",
        "| budget | tables | best trial | KiB | top-1 % | top-5 % | p(true) %"
        " |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for budget in summary["budgets"]:
        rows = [("standard JPEG", "", budget["jpeg"])]
        for fitted in budget["fitted"]:
            best = fitted["best"]
            of = f"{best['trial']} of {fitted['num_trials']}"
            rows += [
                (f"{fitted['family']} start", "", fitted["start"]),
                (fitted["name"], of, best),
            ]
        for label, trial, t in rows:
            lines.append(
                f"| QF {budget['quality']} | {label} | {trial} | "
                f"{t['bytes'] / 1024:.0f} | {t['top1']:.2f} | "
                f"{t['top5']:.2f} | {t['mean_prob']:.2f} |"
            )
    return "\n".join(lines)
