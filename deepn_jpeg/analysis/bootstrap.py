"""Paired bootstrap intervals of the gains over standard JPEG.

Not in the paper (DeepN-JPEG, Liu et al., DAC 2018, reports one gain).
SPEC.md ("Verdict: band gain with a paired bootstrap"): a few hundred images
leave a few images between neighbouring points of a curve, so a gain read
off two curves is noisy. Each resample draws the N images with replacement,
as a row of image counts, and weighs every curve by the same draw (paired);
all candidates under all resamples are then two matrix products
(`resampled_gains`), and each resample's gains are `comparison.compare`'s,
the computation of the point estimates. `gain_intervals` gives the 90%
intervals; `summarize` the curves, gains and verdict with them, as the
result files hold them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compression_helps.core import checks
from compression_helps.engine import candidates, ranking
from deepn_jpeg.analysis import comparison

__all__ = [
    "REPORT_SETTINGS",
    "PERCENTILES",
    "gain_intervals",
    "resampled_gains",
    "summarize",
]

# Settings of `summarize` only: they change what is reported from the
# predictions, never a prediction, so a resumed run may change them.
REPORT_SETTINGS = ("bootstrap", "band_drops", "gain_drops")

PERCENTILES = (5.0, 95.0)  # A 90% interval.
# Image counts per block of resamples (64 MiB of float64): ImageNet's 50,000
# images times 1000 resamples would not fit at once.
_BLOCK_COUNTS = 2**23


def resampled_gains(
    predictions: ranking.Predictions,
    counts: np.ndarray,
    drops: Sequence[float] = comparison.GAIN_DROPS,
    band_drops: Sequence[float] = comparison.BAND_DROPS,
) -> comparison.Gains:
    """Every gain when the images are weighted by each row of `counts`.

    Candidate j's top-1 under weights w is `w @ correct[:, j] / N`, its
    bytes `w @ sizes[:, j]`: all candidates under all weightings are two
    matrix products, and a weighting counts the same images for every
    curve (a paired resample). The original's top-1, hence the targets and
    the band, moves with each weighting.

    Args:
      predictions: N images, with "original" and "jpeg" candidates.
      counts: `[R, N]` image counts (a row of ones, every image once, gives
        the point estimate).
      drops: targets of the single-target gains (`comparison.gains`).
      band_drops: the band (`comparison.verdict`).

    Returns:
      The gains, `[R, ...]`.
    """
    correct = (predictions.ranks <= 1).astype(np.float64)  # [N, C]
    # `metrics.topk_accuracy`'s order of operations: a row of ones gives
    # exactly `comparison.curves`' top-1.
    top1 = counts @ correct / predictions.num_images * 100.0  # [R, C]
    nbytes = counts @ predictions.sizes.astype(np.float64)  # [R, C]
    curve_of = predictions.curves  # [C] str
    columns = {
        c: np.flatnonzero(curve_of == c)
        for c in dict.fromkeys(curve_of.tolist())
    }
    (original,) = columns.pop(candidates.ORIGINAL)
    rows = []
    for r in range(len(counts)):
        frontiers = {
            c: comparison.Frontier.of(nbytes[r, cols], top1[r, cols])
            for c, cols in columns.items()
        }
        targets = [top1[r, original] - drop for drop in drops]
        band = comparison.top1_band(top1[r, original], band_drops)
        rows.append(comparison.compare(frontiers, targets, band))
    return comparison.Gains(
        curves=comparison.compared_curves(columns),
        **{
            f: np.array([getattr(row, f) for row in rows])
            for f in ("jpeg_bytes", "curve_bytes", "band_gain")
        },
    )


def _interval(values: np.ndarray) -> dict:
    """`[R]` resampled gains (NaN: undefined) -> low, high, defined."""
    defined = values[~np.isnan(values)]
    low, high = None, None
    if len(defined):
        low, high = np.percentile(defined, PERCENTILES).tolist()
    return {"low": low, "high": high, "defined": len(defined) / len(values)}


def gain_intervals(
    predictions: ranking.Predictions,
    drops: Sequence[float],
    num_resamples: int,
    seed: int = 0,
    band_drops: Sequence[float] = comparison.BAND_DROPS,
) -> dict[str, dict]:
    """90% intervals of all gains by a paired bootstrap over the images.

    A few hundred images leave a few images between neighbouring points of
    a curve (one image is 0.4 top-1 points of 250), so a gain read off two
    curves is noisy. Each resample draws N images with replacement, as
    counts, and weighs every curve by the same draw (`resampled_gains`).

    Args:
      predictions: all candidates of all images (`comparison.curves`).
      drops: single targets at the original's top-1 minus each drop.
      num_resamples: bootstrap resamples.
      seed: the resampling seed.
      band_drops: the band (`comparison.verdict`).

    Returns:
      {"targets": (curve, drop) -> interval, "band": curve -> interval},
      each interval {"low": 5th, "high": 95th percentile of the gain over
      the resamples where it is defined (None where it never is),
      "defined": the share of resamples where it is}.

    Raises:
      ValueError: num_resamples < 1 (there would be no interval to give).
    """
    checks.integer("num_resamples", num_resamples, 1)
    rng = np.random.default_rng(seed)
    n = predictions.num_images
    block = max(1, _BLOCK_COUNTS // n)
    parts = []
    for start in range(0, num_resamples, block):
        size = min(block, num_resamples - start)
        # Draw i of resample r lands in bin r * n + image: one bincount.
        bins = rng.integers(0, n, [size, n]) + n * np.arange(size)[:, None]
        counts = np.bincount(bins.ravel(), minlength=size * n)  # [size * n]
        counts = counts.reshape(size, n).astype(np.float64)
        parts.append(resampled_gains(predictions, counts, drops, band_drops))
    target_gain = np.concatenate([p.target_gain for p in parts])  # [R, D, K]
    band_gain = np.concatenate([p.band_gain for p in parts])  # [R, K]
    names = parts[0].curves
    return {
        "targets": {
            (curve, drop): _interval(target_gain[:, d, k])
            for d, drop in enumerate(drops)
            for k, curve in enumerate(names)
        },
        "band": {c: _interval(band_gain[:, k]) for k, c in enumerate(names)},
    }


def summarize(
    predictions: ranking.Predictions,
    gain_drops: Sequence[float] = comparison.GAIN_DROPS,
    band_drops: Sequence[float] = comparison.BAND_DROPS,
    bootstrap: int = 1000,
) -> dict:
    """Every curve, its gains and its verdict, as the result files hold them.

    Args:
      predictions: all candidates of all images, "jpeg" and "original"
        among the curves.
      gain_drops: single targets at the original's top-1 minus each.
      band_drops: the verdict's band.
      bootstrap: paired bootstrap resamples (0: no intervals).

    Returns:
      {"curves": `comparison.curves`, "gains": `comparison.gains`,
      "verdict": `comparison.verdict`, "bootstrap": the resamples}.
    """
    curve_points = comparison.curves(predictions)
    original_top1 = curve_points[candidates.ORIGINAL][0]["top1"]
    intervals = None
    if bootstrap:  # One paired bootstrap for all gains.
        intervals = gain_intervals(
            predictions, gain_drops, bootstrap, band_drops=band_drops
        )
    return {
        "curves": curve_points,
        "gains": comparison.gains(
            curve_points, original_top1, gain_drops, intervals
        ),
        "verdict": comparison.verdict(
            curve_points, original_top1, band_drops, intervals
        ),
        "bootstrap": bootstrap,
    }
