"""Rate-accuracy of DeepN-JPEG tables against standard JPEG, for one model.

DeepN-JPEG (Liu et al., DAC 2018) claims about 3.5x higher compression than
standard JPEG at the same accuracy. SPEC.md ("Rate points", "Reported
result"): one table is one rate point; each table is scaled IJG-style over a
grid of quality-like factors (quality 50 = the table itself) and compared
with standard JPEG (Annex K tables at the same qualities) on the same images
and model. Both curves are written by the same encoder (Pillow/libjpeg,
optimized Huffman tables, same chroma subsampling), so only the tables
differ. We report top-1/top-5 against bits per pixel and CR (against the
original files), and the gain at equal top-1: JPEG's bytes divided by
DeepN-JPEG's, each interpolated on its curve.

Diagnostics (not in the paper) split a table set's effect into its parts,
each one more curve: `<name>-luma` (its luma table with the standard chroma
table, both scaled to the same quality), `<name>-chroma` (standard luma, its
chroma), and, for standard JPEG, `jpeg-lumascale` / `jpeg-chromascale` (only
one of the two standard tables scaled over the grid, the other kept at
`Config.diagnostic_quality`), which show what the luma and the chroma steps
each cost in bytes and accuracy.

The candidates are evaluated by `compression_helps.evaluate` (same pipeline,
sharding, resume and bad-image handling as the Compression Helps runs).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from compression_helps import candidates, datasets, evaluate, metrics, models
from deepn_jpeg import codec, design, tables

__all__ = [
    "GAIN_DROPS",
    "JPEG",
    "Config",
    "bytes_at_top1",
    "curve_tables",
    "curves",
    "gain_intervals",
    "gains",
    "load_tablesets",
    "run",
    "table_codec",
    "to_text",
]

# Gains are reported at the original's top-1 minus these points.
GAIN_DROPS = (0.0, 0.5, 1.0)
JPEG = "jpeg"
# Diagnostic curves of standard JPEG: one table scaled, the other fixed.
JPEG_LUMA_SCALE = "jpeg-lumascale"
JPEG_CHROMA_SCALE = "jpeg-chromascale"
RESULT_FILE = "rate_accuracy.json"
PLOT_FILE = "rate_accuracy.png"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` evaluates; the flags of eval_deepn_jpeg.py mirror it.

    Attributes:
      tables: where the table sets come from: a folder (every
        `qtables_<name>.json` in it, e.g. a design_qtable.py or
        fit_qtable.py workdir; curve `<name>`) or one tables JSON file; or a
        tuple of such paths.
      model: registry name or Keras model file.
      weights: "imagenet", a weights file, or None.
      data: folder or `tfds:<name>[:<split>]`; empty: the sample images.
      limit: only the first `limit` images.
      tfds_data_dir: TFDS data dir for `tfds:` sources.
      split: which of those are evaluated (`datasets.split`): "all", or the
        "heldout" half of a seeded split whose "fit" half designed or fitted
        the tables.
      split_seed: seed of the split.
      batch_size: images per model call.
      qualities: the rate grid: IJG quality-like factors applied to the
        standard tables and to every DeepN-JPEG table alike.
      subsampling: chroma subsampling of every candidate file.
      shard_size: images per results shard (the unit of resuming).
      diagnostics: names of table sets to split into `<name>-luma` and
        `<name>-chroma` curves; non-empty also adds `jpeg-lumascale` and
        `jpeg-chromascale`.
      diagnostic_quality: the quality the fixed table of `jpeg-lumascale`
        and `jpeg-chromascale` is kept at.
      gain_drops: gains are reported at the original's top-1 minus each of
        these points.
      bootstrap: resamples of the images for the gains' 90% intervals
        (`gain_intervals`); 0: no intervals.
    """

    tables: str | tuple[str, ...]
    model: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    data: str = ""
    limit: int | None = None
    tfds_data_dir: str | None = None
    split: str = "all"
    split_seed: int = 0
    batch_size: int = 8
    qualities: tuple[int, ...] = candidates.QUALITIES
    subsampling: str = "4:2:0"
    shard_size: int = evaluate.SHARD_SIZE
    diagnostics: tuple[str, ...] = ()
    diagnostic_quality: int = 50
    gain_drops: tuple[float, ...] = GAIN_DROPS
    bootstrap: int = 1000


def table_codec(
    name: str, luma: np.ndarray, chroma: np.ndarray, subsampling: str
) -> candidates.Codec:
    """A candidate codec writing JPEG files with the given tables."""

    def encode(image_uint8):
        return codec.tf_encode(image_uint8, luma, chroma, subsampling)[0]

    return candidates.Codec(name, encode)


def _tables_in(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curve name -> (luma, chroma) from a folder or one JSON file."""
    if os.path.isfile(path):
        name = os.path.splitext(os.path.basename(path))[0]
        return {name.removeprefix("qtables_"): tables.load_json(path)}
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such tables file or folder")
    # The PLM variants first, in their usual order, then by name.
    names = sorted(
        (
            f.removeprefix("qtables_").removesuffix(".json")
            for f in os.listdir(path)
            if f.startswith("qtables_") and f.endswith(".json")
        ),
        key=lambda n: (
            tables.PLM_VARIANTS.index(n)
            if n in tables.PLM_VARIANTS
            else len(tables.PLM_VARIANTS),
            n,
        ),
    )
    if not names:
        raise FileNotFoundError(
            f"{path}: no qtables_<name>.json (run design_qtable.py or "
            "fit_qtable.py first)"
        )
    return {
        name: tables.load_json(design.qtables_path(path, name, "json"))
        for name in names
    }


def load_tablesets(
    paths: str | Sequence[str],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curve name -> (luma, chroma) from folders and/or tables JSON files.

    Args:
      paths: one path or several; a folder contributes every
        `qtables_<name>.json` in it (curve `<name>`), a file its own tables
        (curve: its name without `qtables_` and `.json`).

    Returns:
      The table sets, `[8, 8]` int32 each, in path order.

    Raises:
      FileNotFoundError: a path without tables.
      ValueError: two table sets with the same name, or a reserved or
        malformed name.
    """
    if isinstance(paths, str):
        paths = (paths,)
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in paths:
        for name, pair in _tables_in(path).items():
            if name in found:
                raise ValueError(f"two table sets named {name!r} ({path})")
            if name in (JPEG, "original") or "_q" in name or not name:
                raise ValueError(
                    f"{path}: table set name {name!r} is reserved or "
                    "contains '_q' (curve names are <curve>_q<quality>)"
                )
            found[name] = pair
    return found


def curve_tables(
    tablesets: dict[str, tuple[np.ndarray, np.ndarray]],
    quality: int,
    diagnostics: Sequence[str] = (),
    diagnostic_quality: int = 50,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (luma, chroma) tables of every curve at one grid quality.

    Every table is IJG-scaled to `quality` (`tables.scale_qtable`; quality 50
    is the table itself). Standard JPEG (`JPEG`) comes first, then each
    table set, then the diagnostics (see the module docstring).

    Args:
      tablesets: name -> (luma, chroma) at quality 50.
      quality: the grid quality, 1..100.
      diagnostics: table-set names to split into luma-only and chroma-only
        curves; non-empty also adds the standard one-table-scaled curves.
      diagnostic_quality: quality of the table kept fixed in
        `jpeg-lumascale` and `jpeg-chromascale`.

    Returns:
      Curve name -> (luma, chroma), `[8, 8]` int32 each.

    Raises:
      ValueError: a diagnostics name that is not a table set.
    """
    unknown = sorted(set(diagnostics) - set(tablesets))
    if unknown:
        raise ValueError(
            f"diagnostics {unknown} are not table sets ({sorted(tablesets)})"
        )
    std_luma, std_chroma = tables.standard_qtables(quality)
    result = {JPEG: (std_luma, std_chroma)}
    for name, (luma, chroma) in tablesets.items():
        result[name] = (
            tables.scale_qtable(luma, quality),
            tables.scale_qtable(chroma, quality),
        )
    for name in diagnostics:
        luma, chroma = result[name]
        result[f"{name}-luma"] = (luma, std_chroma)
        result[f"{name}-chroma"] = (std_luma, chroma)
    if diagnostics:
        fixed_luma, fixed_chroma = tables.standard_qtables(diagnostic_quality)
        result[JPEG_LUMA_SCALE] = (std_luma, fixed_chroma)
        result[JPEG_CHROMA_SCALE] = (fixed_luma, std_chroma)
    return result


def _codecs(
    tablesets: dict[str, tuple[np.ndarray, np.ndarray]],
    qualities: Sequence[int],
    subsampling: str,
    diagnostics: Sequence[str] = (),
    diagnostic_quality: int = 50,
) -> list[candidates.Codec]:
    by_quality = {
        quality: curve_tables(
            tablesets, quality, diagnostics, diagnostic_quality
        )
        for quality in qualities
    }
    result = []
    for curve in by_quality[qualities[0]]:
        for quality in qualities:
            luma, chroma = by_quality[quality][curve]
            result.append(
                table_codec(f"{curve}_q{quality}", luma, chroma, subsampling)
            )
    return result


def curves(predictions: evaluate.Predictions) -> dict[str, list[dict]]:
    """Curve name -> its points (name, quality, top1, top5, bpp, cr, bytes).

    Candidate names are `<curve>_q<quality>`; the original is its own
    one-point curve.
    """
    result: dict[str, list[dict]] = {}
    for j, name in enumerate(predictions.names.tolist()):
        chosen = np.full(predictions.num_images, j)
        curve, _, quality = name.rpartition("_q")
        curve = curve or name
        result.setdefault(curve, []).append(
            {
                "name": name,
                "quality": int(quality) if quality.isdigit() else None,
                "top1": metrics.topk_accuracy(predictions.ranks, chosen, 1),
                "top5": metrics.topk_accuracy(predictions.ranks, chosen, 5),
                "bpp": metrics.bits_per_pixel(
                    predictions.sizes, chosen, predictions.num_pixels
                ),
                "cr": metrics.compression_ratio(predictions.sizes, chosen),
                "bytes": int(predictions.sizes[:, j].sum()),
            }
        )
    return result


def bytes_at_top1(points: Sequence[dict], target: float) -> float | None:
    """Bytes a curve needs to reach `target` top-1, interpolated.

    Walking the curve from its smallest files up, the first point with top-1
    >= target and the point before it bound the crossing; bytes are
    interpolated linearly in top-1 between them. None when the curve never
    reaches the target, or already exceeds it at its smallest file (the
    crossing lies outside the measured range).

    Args:
      points: curve points with "bytes" and "top1".
      target: top-1 in percent.

    Returns:
      The interpolated total bytes, or None.
    """
    ordered = sorted(points, key=lambda p: p["bytes"])
    for i, point in enumerate(ordered):
        if point["top1"] >= target:
            if i == 0:
                return None
            low = ordered[i - 1]
            fraction = (target - low["top1"]) / (point["top1"] - low["top1"])
            return low["bytes"] + fraction * (point["bytes"] - low["bytes"])
    return None


def gains(
    curve_points: dict[str, list[dict]],
    original_top1: float,
    drops: Sequence[float] = GAIN_DROPS,
) -> list[dict]:
    """JPEG bytes / DeepN-JPEG bytes at equal top-1, per curve and target.

    Args:
      curve_points: curve name -> points (see `curves`), with `JPEG` and
        "original".
      original_top1: top-1 of the original files, percent.
      drops: targets are `original_top1 - drop` for each drop.

    Returns:
      One dict per drop and curve: curve, drop, target_top1, jpeg_bytes,
      curve_bytes and gain (None where a curve misses the target).
    """
    result = []
    for drop in drops:
        target = original_top1 - drop
        jpeg_bytes = bytes_at_top1(curve_points[JPEG], target)
        for curve, points in curve_points.items():
            if curve in (JPEG, "original"):
                continue
            deepn_bytes = bytes_at_top1(points, target)
            gain = (
                jpeg_bytes / deepn_bytes
                if jpeg_bytes is not None and deepn_bytes is not None
                else None
            )
            result.append(
                {
                    "curve": curve,
                    "drop": drop,
                    "target_top1": target,
                    "jpeg_bytes": jpeg_bytes,
                    "curve_bytes": deepn_bytes,
                    "gain": gain,
                }
            )
    return result


def gain_intervals(
    predictions: evaluate.Predictions,
    drops: Sequence[float],
    num_resamples: int,
    seed: int = 0,
) -> dict[tuple[str, float], dict[str, float | None]]:
    """90% intervals of the gains by a paired bootstrap over the images.

    A few hundred images leave a few images between neighbouring points of
    a curve (one image is 0.4 top-1 points of 250), so a gain read off two
    curves is noisy. Each resample draws N images with replacement, keeps
    them for every curve (paired), and recomputes the curves, the
    original's top-1 (the targets move with it) and the gains.

    Args:
      predictions: all candidates of all images (see `curves`).
      drops: targets are the original's top-1 minus each drop.
      num_resamples: bootstrap resamples.
      seed: the resampling seed.

    Returns:
      (curve, drop) -> {"low": 5th, "high": 95th percentile of the gain
      over the resamples where both curves reach the target, "defined":
      the fraction of resamples where they do}; low and high None where
      none does.
    """
    rng = np.random.default_rng(seed)
    per_image = ("ranks", "sizes", "topk", "topk_probs", "labels", "ids")
    samples: dict[tuple[str, float], list[float]] = {}
    for _ in range(num_resamples):
        rows = rng.integers(0, predictions.num_images, predictions.num_images)
        resampled = dataclasses.replace(
            predictions,
            num_pixels=predictions.num_pixels[rows],
            **{name: getattr(predictions, name)[rows] for name in per_image},
        )
        points = curves(resampled)
        for g in gains(points, points["original"][0]["top1"], drops):
            values = samples.setdefault((g["curve"], g["drop"]), [])
            if g["gain"] is not None:
                values.append(g["gain"])
    result = {}
    for key, values in samples.items():
        low, high = (None, None)
        if values:
            low, high = np.percentile(values, [5, 95]).tolist()
        defined = len(values) / num_resamples
        result[key] = {"low": low, "high": high, "defined": defined}
    return result


def _label_and_style(curve: str) -> tuple[str, str]:
    if curve == JPEG:
        return "standard JPEG", "o-"
    if curve in tables.PLM_VARIANTS:
        return f"DeepN {curve}", "s--"
    if curve in (JPEG_LUMA_SCALE, JPEG_CHROMA_SCALE) or curve.endswith(
        ("-luma", "-chroma")
    ):
        return curve, "^:"
    return curve, "d-."


def _plot(curve_points: dict[str, list[dict]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    original = curve_points["original"][0]
    for ax, key in zip(axes, ("top1", "top5"), strict=True):
        for curve, points in curve_points.items():
            if curve == "original":
                continue
            ordered = sorted(points, key=lambda p: p["bpp"])
            label, style = _label_and_style(curve)
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
        ax.set_xscale("log")
        # Plain numbers at 1, 2, 5 x 10^k: the default labels overlap.
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("bits per pixel (log scale)")
        ax.set_ylabel(f"{key} accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def to_text(result: dict) -> str:
    """The curves and gains as markdown tables."""
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
        lines.append(
            "| JPEG KiB | "
            + " | ".join(
                "n/a"
                if first[t]["jpeg_bytes"] is None
                else f"{first[t]['jpeg_bytes'] / 1024:.0f}"
                for t in targets
            )
            + " |"
        )

    def cell(g: dict) -> str:
        if g["gain"] is None:
            return "n/a"
        interval = g.get("interval")
        if interval is None:
            return f"{g['gain']:.2f}x"
        return (
            f"{g['gain']:.2f}x [{interval['low']:.2f}, {interval['high']:.2f}]"
        )

    for curve, by_target in rows.items():
        cells = [cell(by_target[t]) for t in targets]
        lines.append(f"| {curve} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Evaluates all curves, prints and writes the result and the plot.

    Args:
      config: what to evaluate.
      workdir: output directory (created).
      resume: continue an interrupted run in `workdir`.
      verbose: progress bar and printed tables.

    Returns:
      The result dict, as written to `<workdir>/rate_accuracy.json`.
    """
    qualities = candidates.validate_qualities(config.qualities)
    tablesets = load_tablesets(config.tables)
    codecs = _codecs(
        tablesets,
        qualities,
        config.subsampling,
        config.diagnostics,
        config.diagnostic_quality,
    )
    codec.check_subsampling(config.subsampling)
    os.makedirs(workdir, exist_ok=True)
    classifier = models.load_classifier(config.model, config.weights)
    source = datasets.split(
        datasets.load(
            config.data or datasets.sample_images_dir(),
            config.limit,
            config.tfds_data_dir,
        ),
        config.split,
        config.split_seed,
    )
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    predictions, skipped = evaluate.predict(
        classifier,
        source,
        codecs,
        config.batch_size,
        workdir=workdir,
        resume=resume,
        shard_size=config.shard_size,
        verbose=verbose,
    )
    predictions.save(os.path.join(workdir, evaluate.PREDICTIONS_FILE))
    curve_points = curves(predictions)
    original_top1 = curve_points["original"][0]["top1"]
    gain_points = gains(curve_points, original_top1, config.gain_drops)
    if config.bootstrap:
        intervals = gain_intervals(
            predictions, config.gain_drops, config.bootstrap
        )
        for g in gain_points:
            g["interval"] = intervals[(g["curve"], g["drop"])]
    result = {
        "model": config.model,
        "n_images": predictions.num_images,
        "images": source.description,
        "n_errors": len(skipped),
        "tables": {
            name: {"luma": luma.tolist(), "chroma": chroma.tolist()}
            for name, (luma, chroma) in tablesets.items()
        },
        "curves": curve_points,
        "gains": gain_points,
        "bootstrap": config.bootstrap,
    }
    with open(os.path.join(workdir, RESULT_FILE), "w") as f:
        json.dump(result, f, indent=2)
    _plot(
        curve_points,
        os.path.join(workdir, PLOT_FILE),
        f"{config.model}, {predictions.num_images} images",
    )
    if verbose:
        print(
            f"\n{config.model}: {predictions.num_images} images, "
            f"{len(skipped)} skipped\n"
        )
        print(to_text(result))
    return result
