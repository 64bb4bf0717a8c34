"""Rate-accuracy curves of codecs and their gains at equal accuracy.

DeepN-JPEG (Liu et al., DAC 2018) reports about 3.5x higher compression
than standard JPEG at the same accuracy. SPEC.md ("Rate points", "Reported
result"): each codec's candidates form a curve of (bytes, top-1) points;
the gain at a target top-1 is standard JPEG's bytes divided by a curve's,
each interpolated on its curve. Not in the paper: a paired bootstrap over
the images gives each gain a 90% interval (`gain_intervals`).

Pure functions of `evaluate.Predictions`; `rate_accuracy` is the job that
makes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compression_helps import candidates, checks, evaluate, metrics

__all__ = [
    "GAIN_DROPS",
    "bytes_at_top1",
    "curves",
    "gain_intervals",
    "gains",
]

# Gains are reported at the original's top-1 minus these points.
GAIN_DROPS = (0.0, 0.5, 1.0)


def curves(predictions: evaluate.Predictions) -> dict[str, list[dict]]:
    """Curve name -> its points, grouped by `Predictions.curves`.

    Args:
      predictions: candidate 0 the original (its own one-point curve).

    Returns:
      Per curve, one dict per candidate: name, quality (None for the
      original), top1 and top5 (`evaluate.accuracy`), bpp, cr, bytes.
    """
    result: dict[str, list[dict]] = {}
    for j, (curve, quality, name) in enumerate(
        zip(
            predictions.curves.tolist(),
            predictions.qualities.tolist(),
            predictions.names.tolist(),
            strict=True,
        )
    ):
        chosen = np.full(predictions.num_images, j)
        accuracy = evaluate.accuracy(predictions, j)
        result.setdefault(curve, []).append(
            {
                "name": name,
                "quality": None if curve == candidates.ORIGINAL else quality,
                "top1": accuracy["top1"],
                "top5": accuracy["top5"],
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
      curve_points: curve name -> points (see `curves`), with "jpeg"
        (`candidates.JPEG`) and "original".
      original_top1: top-1 of the original files, percent.
      drops: targets are `original_top1 - drop` for each drop.

    Returns:
      One dict per drop and curve: curve, drop, target_top1, jpeg_bytes,
      curve_bytes and gain (None where a curve misses the target).
    """
    result = []
    for drop in drops:
        target = original_top1 - drop
        jpeg_bytes = bytes_at_top1(curve_points[candidates.JPEG], target)
        for curve, points in curve_points.items():
            if curve in (candidates.JPEG, candidates.ORIGINAL):
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

    Raises:
      ValueError: num_resamples < 1 (there would be no interval to give).
    """
    checks.integer("num_resamples", num_resamples, 1)
    rng = np.random.default_rng(seed)
    samples: dict[tuple[str, float], list[float]] = {}
    for _ in range(num_resamples):
        rows = rng.integers(0, predictions.num_images, predictions.num_images)
        points = curves(predictions.select(rows))
        original_top1 = points[candidates.ORIGINAL][0]["top1"]
        for g in gains(points, original_top1, drops):
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
