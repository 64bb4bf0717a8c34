"""Rate-accuracy curves of codecs and their gains over standard JPEG.

DeepN-JPEG (Liu et al., DAC 2018) reports about 3.5x higher compression
than standard JPEG at the same accuracy. SPEC.md ("Rate points", "Reported
result"): each codec's candidates form a curve of (bytes, top-1) points;
the gain at a target top-1 is standard JPEG's bytes divided by a curve's,
each interpolated on its curve (`gains`). Not in the paper (SPEC.md,
"Verdict"): the band gain, the geometric mean of that ratio over a band of
top-1 values (`band_gain`, `verdict`). `compare` is the one computation of
all gains, on all images here and under each resample of the paired
bootstrap that gives their 90% intervals (`deepn_jpeg.bootstrap`).

Pure functions of `ranking.Predictions`; `rate_accuracy` is the job that
makes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import interpolate

from compression_helps.engine import candidates, metrics, ranking

__all__ = [
    "BAND_DROPS",
    "GAIN_DROPS",
    "MIN_DEFINED",
    "Frontier",
    "Gains",
    "band_gain",
    "bytes_at_top1",
    "call",
    "compare",
    "compared_curves",
    "curves",
    "gains",
    "top1_band",
    "verdict",
]

# Gains are reported at the original's top-1 minus these points.
GAIN_DROPS = (0.0, 0.5, 1.0)
# The verdict's band: the original's top-1 minus 5 to minus 1 points.
BAND_DROPS = (1.0, 5.0)
# A call needs the band covered in this share of the resamples: the interval
# only describes the resamples where the gain is defined.
MIN_DEFINED = 0.9


def curves(predictions: ranking.Predictions) -> dict[str, list[dict]]:
    """Curve name -> its points, grouped by `Predictions.curves`.

    Args:
      predictions: candidate 0 the original (its own one-point curve).

    Returns:
      Per curve, one dict per candidate: name, quality (None for the
      original), top1 and top5 (`ranking.accuracy`), bpp, cr, bytes.
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
        accuracy = ranking.accuracy(predictions, j)
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


@dataclasses.dataclass(frozen=True)
class Frontier:
    """A curve's monotone frontier: its bytes as a function of top-1.

    Attributes:
      nbytes: `[P]` bytes of the kept points, strictly increasing.
      top1: `[P]` their top-1 in percent, strictly increasing.
    """

    nbytes: np.ndarray
    top1: np.ndarray

    @classmethod
    def of(cls, nbytes: np.ndarray, top1: np.ndarray) -> Frontier:
        """Sorted by bytes, the points more accurate than all smaller files.

        A larger file that is no more accurate is dominated: nobody would
        pick it, and it would make bytes a non-monotone function of top-1
        (two byte counts for one top-1), which no interpolation in top-1
        can represent. Equal bytes: the best top-1 counts.
        """
        order = np.lexsort((-top1, nbytes))
        nbytes, top1 = nbytes[order], top1[order]
        keep = np.ones(len(top1), bool)
        keep[1:] = top1[1:] > np.maximum.accumulate(top1)[:-1]
        return cls(nbytes[keep], top1[keep])

    def covers(self, low: float, high: float) -> bool:
        """The measured top-1 range holds [low, high]: no extrapolation."""
        return bool(self.top1[0] <= low and high <= self.top1[-1])

    def bytes_at(self, target: float) -> float:
        """Bytes at `target` top-1, linear between its neighbours; or NaN."""
        if not self.covers(target, target):
            return np.nan
        return float(np.interp(target, self.top1, self.nbytes))

    def log_bytes_integral(self, low: float, high: float) -> float:
        """The exact integral of PCHIP log bytes over top-1 in [low, high].

        PCHIP passes through the points and stays monotone between them (a
        cubic spline may overshoot). NaN outside the measured range.
        """
        if not self.covers(low, high):
            return np.nan
        log_bytes = interpolate.PchipInterpolator(
            self.top1, np.log(self.nbytes), extrapolate=False
        )
        return float(log_bytes.integrate(low, high))


@dataclasses.dataclass(frozen=True)
class Gains:
    """Every curve's gains over JPEG; NaN where a curve or JPEG misses.

    `[...]` is `[R]` for R weightings of the images, `[]` for one.

    Attributes:
      curves: the K compared curves (all but JPEG and the original).
      jpeg_bytes: `[..., D]` JPEG's bytes at each target top-1.
      curve_bytes: `[..., D, K]` each curve's bytes at each target.
      band_gain: `[..., K]` each curve's band gain.
    """

    curves: list[str]
    jpeg_bytes: np.ndarray
    curve_bytes: np.ndarray
    band_gain: np.ndarray

    @property
    def target_gain(self) -> np.ndarray:
        """`[..., D, K]` JPEG bytes / curve bytes at each target."""
        return self.jpeg_bytes[..., None] / self.curve_bytes


def compare(
    frontiers: Mapping[str, Frontier],
    targets: Sequence[float],
    band: tuple[float, float],
) -> Gains:
    """The gains of every curve of `frontiers` but JPEG, against JPEG.

    The one computation behind the point estimates (`gains`, `band_gain`,
    `verdict`) and each bootstrap resample
    (`bootstrap.resampled_gains`). Band gain: exp(mean over the band of
    log B_jpeg(t) - log B_curve(t)).

    Args:
      frontiers: curve name -> frontier, `candidates.JPEG` among them.
      targets: single target top-1 values (percent).
      band: (low, high) top-1 of the band gain.

    Returns:
      The gains of the other curves, in `frontiers`' order.
    """
    reference = frontiers[candidates.JPEG]
    names = [c for c in frontiers if c != candidates.JPEG]
    low, high = band
    reference_integral = reference.log_bytes_integral(low, high)
    log_gain = [
        (reference_integral - frontiers[c].log_bytes_integral(low, high))
        / (high - low)
        for c in names
    ]
    curve_bytes = [[frontiers[c].bytes_at(t) for c in names] for t in targets]
    return Gains(
        curves=names,
        jpeg_bytes=np.array([reference.bytes_at(t) for t in targets]),
        curve_bytes=np.reshape(curve_bytes, [len(targets), len(names)]),
        band_gain=np.exp(np.array(log_gain, np.float64)),  # NaN stays NaN.
    )


def compared_curves(names: Sequence[str]) -> list[str]:
    """The curves compared with JPEG: all but JPEG and the original."""
    return [c for c in names if c not in (candidates.JPEG, candidates.ORIGINAL)]


def _frontier_of(points: Sequence[dict]) -> Frontier:
    return Frontier.of(
        np.array([p["bytes"] for p in points], np.float64),
        np.array([p["top1"] for p in points], np.float64),
    )


def top1_band(
    original_top1: float, band_drops: Sequence[float]
) -> tuple[float, float]:
    """The verdict's band: (low, high) top-1 below the original's.

    Args:
      original_top1: the original files' top-1; the band moves with it.
      band_drops: (smaller, larger) drops below it.

    Returns:
      (original_top1 - larger, original_top1 - smaller).
    """
    return (original_top1 - band_drops[1], original_top1 - band_drops[0])


def _point_gains(
    curve_points: dict[str, list[dict]],
    original_top1: float,
    drops: Sequence[float],
    band_drops: Sequence[float],
) -> Gains:
    """`compare` on the curves of all images (`curves`)."""
    names = [candidates.JPEG, *compared_curves(curve_points)]
    frontiers = {c: _frontier_of(curve_points[c]) for c in names}
    targets = [original_top1 - drop for drop in drops]
    return compare(frontiers, targets, top1_band(original_top1, band_drops))


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def bytes_at_top1(points: Sequence[dict], target: float) -> float | None:
    """Bytes a curve needs to reach `target` top-1, interpolated.

    Linearly in top-1 on the curve's monotone frontier (see `band_gain`);
    None outside its top-1 range (never reached, or passed already by the
    smallest file).

    Args:
      points: curve points with "bytes" and "top1".
      target: top-1 in percent.

    Returns:
      The interpolated total bytes, or None.
    """
    return _none_if_nan(_frontier_of(points).bytes_at(target))


def band_gain(
    reference_points: Sequence[dict],
    curve_points: Sequence[dict],
    band: tuple[float, float],
) -> float | None:
    """The geometric-mean bytes ratio reference / curve over a top-1 band.

    Bjontegaard-style (SPEC.md, "Verdict"): on each curve's monotone
    frontier (sorted by bytes, a point is kept only when its top-1 is above
    every smaller file's), log bytes is interpolated as a function of top-1
    by PCHIP and integrated exactly over the band; the gain is
    `exp((integral of log B_ref - log B_curve) / (high - low))`.

    Args:
      reference_points: the reference curve's points ("bytes", "top1").
      curve_points: the compared curve's points.
      band: (low, high) top-1 in percent.

    Returns:
      The gain, > 1 when the curve needs fewer bytes; None when either
      frontier does not span the whole band (no extrapolation).

    Raises:
      ValueError: low >= high.
    """
    if not band[0] < band[1]:
        raise ValueError(f"band must be (low, high) with low < high: {band}")
    frontiers = {
        candidates.JPEG: _frontier_of(reference_points),
        "curve": _frontier_of(curve_points),
    }
    return _none_if_nan(compare(frontiers, (), tuple(band)).band_gain[0])


def gains(
    curve_points: dict[str, list[dict]],
    original_top1: float,
    drops: Sequence[float] = GAIN_DROPS,
    intervals: dict | None = None,
) -> list[dict]:
    """JPEG bytes / DeepN-JPEG bytes at equal top-1, per curve and target.

    Args:
      curve_points: curve name -> points (see `curves`).
      original_top1: top-1 of the original files, percent.
      drops: targets are `original_top1 - drop` for each drop.
      intervals: `bootstrap.gain_intervals` of the same drops, or None.

    Returns:
      One dict per drop and curve: curve, drop, target_top1, jpeg_bytes,
      curve_bytes, gain (None where a curve misses the target) and, with
      `intervals`, its "interval" (see `bootstrap.gain_intervals`).
    """
    point = _point_gains(curve_points, original_top1, drops, BAND_DROPS)
    result = []
    for d, drop in enumerate(drops):
        for k, curve in enumerate(point.curves):
            gain = {
                "curve": curve,
                "drop": drop,
                "target_top1": original_top1 - drop,
                "jpeg_bytes": _none_if_nan(point.jpeg_bytes[d]),
                "curve_bytes": _none_if_nan(point.curve_bytes[d, k]),
                "gain": _none_if_nan(point.target_gain[d, k]),
            }
            if intervals is not None:
                gain["interval"] = intervals["targets"][(curve, drop)]
            result.append(gain)
    return result


def call(entry: dict) -> str:
    """A `verdict` entry in plain words (SPEC.md, "Verdict").

    Args:
      entry: with "gain", "low", "high" and "defined".

    Returns:
      "fewer bytes than JPEG" when the 90% interval lies above 1, "more
      bytes than JPEG" below it, "band not covered" without a gain on all
      images, else "not settled": the interval holds 1, there is none, or
      the band is covered in under `MIN_DEFINED` of the resamples.
    """
    if entry["gain"] is None:
        return "band not covered"
    if entry["low"] is None or entry["defined"] < MIN_DEFINED:
        return "not settled"
    if entry["low"] > 1.0:
        return "fewer bytes than JPEG"
    if entry["high"] < 1.0:
        return "more bytes than JPEG"
    return "not settled"


def verdict(
    curve_points: dict[str, list[dict]],
    original_top1: float,
    band_drops: Sequence[float] = BAND_DROPS,
    intervals: dict | None = None,
) -> list[dict]:
    """The band gain of every curve over JPEG, with its interval and call.

    Args:
      curve_points: curve name -> points (see `curves`).
      original_top1: top-1 of the original files.
      band_drops: (smaller, larger): the band is the original's top-1 minus
        the larger to minus the smaller.
      intervals: `bootstrap.gain_intervals` with the same band drops, or
        None.

    Returns:
      One dict per curve but "jpeg" and "original": curve, band ([low,
      high] top-1), gain (None where a frontier misses the band), low,
      high and defined (`bootstrap.gain_intervals`; None without them),
      top1_range and jpeg_top1_range (the frontiers' [smallest, largest]
      top-1: they must hold the band) and call (`call`).
    """
    point = _point_gains(curve_points, original_top1, (), band_drops)
    no_interval = {"low": None, "high": None, "defined": None}
    jpeg = _frontier_of(curve_points[candidates.JPEG])
    result = []
    for k, curve in enumerate(point.curves):
        frontier = _frontier_of(curve_points[curve])
        entry = {
            "curve": curve,
            "band": list(top1_band(original_top1, band_drops)),
            "gain": _none_if_nan(point.band_gain[k]),
            **(intervals["band"][curve] if intervals else no_interval),
            "top1_range": [float(frontier.top1[0]), float(frontier.top1[-1])],
            "jpeg_top1_range": [float(jpeg.top1[0]), float(jpeg.top1[-1])],
        }
        entry["call"] = call(entry)
        result.append(entry)
    return result
