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
    "Config",
    "bytes_at_top1",
    "curves",
    "gains",
    "run",
    "table_codec",
]

# Gains are reported at the original's top-1 minus these points.
GAIN_DROPS = (0.0, 0.5, 1.0)
JPEG = "jpeg"
RESULT_FILE = "rate_accuracy.json"
PLOT_FILE = "rate_accuracy.png"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` evaluates; the flags of eval_deepn_jpeg.py mirror it.

    Attributes:
      tables: a design_qtable.py workdir (every `qtables_<variant>.json` in
        it), or one tables JSON file.
      model: registry name or Keras model file.
      weights: "imagenet", a weights file, or None.
      data: folder or `tfds:<name>[:<split>]`; empty: the sample images.
      limit: only the first `limit` images.
      batch_size: images per model call.
      qualities: the rate grid: IJG quality-like factors applied to the
        standard tables and to every DeepN-JPEG table alike.
      subsampling: chroma subsampling of every candidate file.
      shard_size: images per results shard (the unit of resuming).
    """

    tables: str
    model: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    data: str = ""
    limit: int | None = None
    batch_size: int = 8
    qualities: tuple[int, ...] = candidates.QUALITIES
    subsampling: str = "4:2:0"
    shard_size: int = evaluate.SHARD_SIZE


def table_codec(
    name: str, luma: np.ndarray, chroma: np.ndarray, subsampling: str
) -> candidates.Codec:
    """A candidate codec writing JPEG files with the given tables."""

    def encode(image_uint8):
        return codec.tf_encode(image_uint8, luma, chroma, subsampling)[0]

    return candidates.Codec(name, encode)


def _load_tablesets(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curve name -> (luma, chroma) from a design workdir or one JSON."""
    if os.path.isfile(path):
        name = os.path.splitext(os.path.basename(path))[0]
        return {name.removeprefix("qtables_"): tables.load_json(path)}
    found = {
        variant: tables.load_json(design.qtables_path(path, variant, "json"))
        for variant in tables.PLM_VARIANTS
        if os.path.exists(design.qtables_path(path, variant, "json"))
    }
    if not found:
        raise FileNotFoundError(
            f"{path}: no qtables_<variant>.json (run design_qtable.py first)"
        )
    return found


def _codecs(
    tablesets: dict[str, tuple[np.ndarray, np.ndarray]],
    qualities: Sequence[int],
    subsampling: str,
) -> list[candidates.Codec]:
    curves_tables = {JPEG: tables.standard_qtables(50), **tablesets}
    result = []
    for curve, (luma, chroma) in curves_tables.items():
        for quality in qualities:
            result.append(
                table_codec(
                    f"{curve}_q{quality}",
                    tables.scale_qtable(luma, quality),
                    tables.scale_qtable(chroma, quality),
                    subsampling,
                )
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
    curve_points: dict[str, list[dict]], original_top1: float
) -> list[dict]:
    """JPEG bytes / DeepN-JPEG bytes at equal top-1, per curve and target."""
    result = []
    for drop in GAIN_DROPS:
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
                    "target_top1": target,
                    "jpeg_bytes": jpeg_bytes,
                    "curve_bytes": deepn_bytes,
                    "gain": gain,
                }
            )
    return result


def _plot(curve_points: dict[str, list[dict]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    original = curve_points["original"][0]
    for ax, key in zip(axes, ("top1", "top5"), strict=True):
        for curve, points in curve_points.items():
            if curve == "original":
                continue
            ordered = sorted(points, key=lambda p: p["bpp"])
            ax.plot(
                [p["bpp"] for p in ordered],
                [p[key] for p in ordered],
                "o-" if curve == JPEG else "s--",
                label="standard JPEG" if curve == JPEG else f"DeepN {curve}",
                markersize=4,
            )
        ax.axhline(
            original[key],
            color="gray",
            lw=0.8,
            label=f"original files ({original['bpp']:.2f} bpp)",
        )
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (log scale)")
        ax.set_ylabel(f"{key} accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
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
    lines += [
        "",
        "| curve | at top-1 % | JPEG KiB | curve KiB | gain (JPEG/curve) |",
        "|---|---:|---:|---:|---:|",
    ]

    def kib(value):
        return "n/a" if value is None else f"{value / 1024:.0f}"

    for g in result["gains"]:
        gain = "n/a" if g["gain"] is None else f"{g['gain']:.2f}x"
        lines.append(
            f"| {g['curve']} | {g['target_top1']:.2f} | {kib(g['jpeg_bytes'])}"
            f" | {kib(g['curve_bytes'])} | {gain} |"
        )
    return "\n".join(lines)


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Evaluates both curves, prints and writes the result and the plot.

    Args:
      config: what to evaluate.
      workdir: output directory (created).
      resume: continue an interrupted run in `workdir`.
      verbose: progress bar and printed tables.

    Returns:
      The result dict, as written to `<workdir>/rate_accuracy.json`.
    """
    qualities = candidates.validate_qualities(config.qualities)
    tablesets = _load_tablesets(config.tables)
    if config.subsampling not in codec.SUBSAMPLINGS:
        raise ValueError(
            f"subsampling must be one of {codec.SUBSAMPLINGS}, "
            f"got {config.subsampling!r}"
        )
    os.makedirs(workdir, exist_ok=True)
    classifier = models.load_classifier(config.model, config.weights)
    source = datasets.load(
        config.data or datasets.sample_images_dir(), config.limit
    )
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    predictions, skipped = evaluate.predict(
        classifier,
        source,
        _codecs(tablesets, qualities, config.subsampling),
        config.batch_size,
        workdir=workdir,
        resume=resume,
        shard_size=config.shard_size,
        verbose=verbose,
    )
    predictions.save(os.path.join(workdir, evaluate.PREDICTIONS_FILE))
    curve_points = curves(predictions)
    original_top1 = curve_points["original"][0]["top1"]
    result = {
        "model": config.model,
        "n_images": predictions.num_images,
        "n_errors": len(skipped),
        "tables": {
            name: {"luma": luma.tolist(), "chroma": chroma.tolist()}
            for name, (luma, chroma) in tablesets.items()
        },
        "curves": curve_points,
        "gains": gains(curve_points, original_top1),
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
