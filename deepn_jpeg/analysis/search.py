"""The search behind fitted tables: one family, one byte budget.

Not in the paper (SPEC.md, "DNN-oriented tables: families and fit";
DeepN-JPEG, Liu et al., DAC 2018, designs its tables from
the images' DCT statistics alone). `fit` is the job; here, for one table
family (`deepn_jpeg.families`) and one byte budget on a fixed set of images
(`in_memory.InMemoryImages`):

- each parameter vector of the family gives a (luma, chroma) table pair;
  one common factor scales both until the files are just within the budget
  (`fit_scale`, encodings only); then the model classifies the files once
  (`measure`). So every trial is compared at equal bytes.
- Nelder-Mead (scipy), from the family's unfitted start (trial 0),
  maximises `score`: top-1 plus `tie_weight` times the true label's mean
  probability (smoother than top-1 alone on a few hundred images). The
  best trial wins, the start on ties, so a fitted table never scores lower
  than the start on the images it was fitted on (`search`).

Trials are scored by `ranking.accuracy`, so a table scores here what
`rate_accuracy` reports on the same images. Every trial goes through the
run's trial log (`rundir.JsonlCache`), keyed by what fixes its result, so a
resumed search replays it: the optimiser asks for the same trials in the
same order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.optimize
from absl import logging

from compression_helps.core import rundir
from compression_helps.engine import candidates, in_memory, ranking
from deepn_jpeg.analysis import families
from deepn_jpeg.jpeg import ladder, tables

__all__ = [
    "fit_scale",
    "measure",
    "score",
    "search",
]

# log(bytes) / log(scale) assumed until two encodings give a measured one.
_DEFAULT_BYTES_SLOPE = -0.7
_MAX_SCALE_PASSES = 16
_LOG_SCALE_RANGE = (math.log(1e-3), math.log(1e3))
# Nelder-Mead's first simplex: this fraction of each parameter's range.
_SIMPLEX_STEP = 0.15


def score(trial: dict[str, Any], tie_weight: float) -> float:
    """The search's objective (higher is better).

    Args:
      trial: a trial record: "feasible", and "top1" and "mean_prob" (both
        percent) where feasible.
      tie_weight: weight of the mean true-label probability.

    Returns:
      top-1 + tie_weight * mean_prob; -1e3 for a table pair that cannot
      meet its budget.
    """
    if not trial["feasible"]:
        return -1e3
    return trial["top1"] + tie_weight * trial["mean_prob"]


def fit_scale(
    total_bytes: Callable[[float], int],
    budget: float,
    scale_guess: float = 1.0,
    tolerance: float = 0.01,
    max_passes: int = _MAX_SCALE_PASSES,
) -> tuple[float | None, int | None, int]:
    """The table scale whose files come closest to a byte budget from below.

    Bytes fall as the scale grows (coarser steps), in steps because tables
    are integers. A secant search on log(bytes) against log(scale), kept
    inside the bracket once one is found, stops at the first scale with
    bytes in [(1 - tolerance) * budget, budget].

    Args:
      total_bytes: scale -> total bytes of all images (one encoding pass).
      budget: the byte budget.
      scale_guess: first scale tried.
      tolerance: accepted fraction below the budget.
      max_passes: at most this many encoding passes.

    Returns:
      `(scale, bytes, passes)`: among the scales tried, the one with the
      most bytes within the budget (None, None when none fits), and the
      number of encoding passes.
    """
    tried: dict[float, int] = {}
    best: tuple[float | None, int | None] = (None, None)
    low = high = None  # Largest scale over the budget, smallest within.
    target = math.log(budget * (1.0 - tolerance / 2))
    scale = float(scale_guess)
    for _ in range(max_passes):
        nbytes = tried[scale] = total_bytes(scale)
        if nbytes <= budget:
            if best[1] is None or nbytes > best[1]:
                best = (scale, nbytes)
            if nbytes >= (1.0 - tolerance) * budget:
                break
            high = scale if high is None else min(high, scale)
        else:
            low = scale if low is None else max(low, scale)
        # The slope through the two tried points closest to the target.
        (s0, b0), *rest = sorted(
            tried.items(), key=lambda kv: abs(math.log(kv[1]) - target)
        )
        slope = _DEFAULT_BYTES_SLOPE
        if rest:
            s1, b1 = rest[0]
            slope = (math.log(b1) - math.log(b0)) / (
                math.log(s1) - math.log(s0)
            )
            slope = min(max(slope, -5.0), -0.05)  # Bytes fall with scale.
        log_next = math.log(scale) + (target - math.log(nbytes)) / slope
        # At most a factor e^2 per pass, within scales that still change an
        # 8-bit table (every step is 1 below, 255 above).
        log_next = min(max(log_next, math.log(scale) - 2), math.log(scale) + 2)
        log_next = min(max(log_next, _LOG_SCALE_RANGE[0]), _LOG_SCALE_RANGE[1])
        if low is not None and high is not None:
            if high / low < 1 + 1e-6:
                break
            if not math.log(low) < log_next < math.log(high):
                log_next = (math.log(low) + math.log(high)) / 2  # Bisect.
        if math.exp(log_next) in tried:
            break
        scale = math.exp(log_next)
    return best[0], best[1], len(tried)


class _TrialsDone(Exception):
    """Raised by the objective when a search has used its trials."""


def measure(
    images: in_memory.InMemoryImages, codecs: Sequence[candidates.Codec]
) -> dict:
    """Bytes and accuracy of the original files or of one codec's.

    Args:
      images: the images, decoded once.
      codecs: one codec; empty: the original files.

    Returns:
      A trial's measurements: "feasible" (True), "bytes" (all images) and
      `ranking.accuracy`'s "top1", "top5" and "mean_prob".
    """
    predictions = images.predict(codecs, with_original=not codecs)
    return {
        "feasible": True,
        "bytes": int(predictions.sizes[:, 0].sum()),
        **ranking.accuracy(predictions, 0),
    }


def search(
    family: families.Family,
    quality: int,
    budget: int,
    images: in_memory.InMemoryImages,
    log: rundir.JsonlCache,
    *,
    subsampling: str,
    budget_tolerance: float,
    max_trials: int,
    tie_weight: float,
) -> tuple[dict, list[dict]]:
    """Fits one family at one byte budget by Nelder-Mead on `score`.

    Args:
      family: the table family searched.
      quality: the QF of standard JPEG that set the budget (the first scale
        tried is its IJG factor).
      budget: total bytes of all images.
      images: the fit images, decoded once.
      log: the trial log; a trial found there is replayed, not computed.
      subsampling: chroma subsampling of every file.
      budget_tolerance: a table pair is accepted with bytes in
        [(1 - budget_tolerance) * budget, budget] (`fit_scale`).
      max_trials: parameter vectors tried.
      tie_weight: see `score`.

    Returns:
      The best trial (the start on ties) and all trials, in order.

    Raises:
      ValueError: no trial's tables meet the budget.
    """
    trials: list[dict] = []
    # The first scale tried: the IJG factor of the budget's QF, then the
    # last feasible trial's (replays see the same sequence).
    scale_guess = [tables.ijg_scale_factor(quality) / 100.0]

    def table_codec(x: np.ndarray, scale: float) -> candidates.Codec:
        luma, chroma = family.shape(x, scale)
        return ladder.table_codec(
            f"fit-{family.name}", quality, luma, chroma, subsampling
        )

    def compute(x: np.ndarray) -> dict:
        begin = time.time()
        scale, nbytes, passes = fit_scale(
            lambda s: int(images.sizes([table_codec(x, s)]).sum()),
            budget,
            scale_guess[0],
            budget_tolerance,
        )
        record = {
            "family": family.name,
            "budget_quality": quality,
            "budget_bytes": budget,
            "params": dict(zip(family.param_names, x.tolist(), strict=True)),
            "feasible": scale is not None,
            "encode_passes": passes,
        }
        if scale is not None:
            luma, chroma = family.shape(x, scale)
            record.update(
                scale=scale, luma=luma.tolist(), chroma=chroma.tolist()
            )
            record.update(measure(images, [table_codec(x, scale)]))
        record["seconds"] = round(time.time() - begin, 2)
        return record

    def objective(unit: np.ndarray) -> float:
        if len(trials) >= max_trials:
            raise _TrialsDone  # Ends the optimiser; caught below.
        x = family.from_unit(unit)
        # The key fixes a trial's result (with the run's settings, which a
        # resume checks).
        key = "|".join([family.name, str(quality), *(f"{v:.12g}" for v in x)])
        record = {**log.get_or_compute(key, lambda: compute(x))}
        record["trial"] = len(trials)
        trials.append(record)
        if record["feasible"]:
            scale_guess[0] = record["scale"]
        logging.info(
            "%s QF %d trial %d: %s",
            family.name,
            quality,
            record["trial"],
            f"{record['bytes']} bytes, top-1 {record['top1']:.2f}, "
            f"p(true) {record['mean_prob']:.2f}"
            if record["feasible"]
            else "cannot meet the budget",
        )
        return -score(record, tie_weight)

    start = family.to_unit(family.start)
    # A simplex of steps into the box from the start (trial 0).
    steps = np.where(
        start + _SIMPLEX_STEP <= 1.0, _SIMPLEX_STEP, -_SIMPLEX_STEP
    )
    simplex = np.vstack([start, start + np.diag(steps)])
    try:
        scipy.optimize.minimize(
            objective,
            start,
            method="Nelder-Mead",
            bounds=[(0.0, 1.0)] * len(start),
            options={"initial_simplex": simplex, "maxfev": max_trials},
        )
    except _TrialsDone:
        pass
    feasible = [t for t in trials if t["feasible"]]
    if not feasible:
        raise ValueError(
            f"{family.name}: no table meets the QF {quality} budget of "
            f"{budget} bytes"
        )
    # max() keeps the first of equal scores: the start wins ties.
    return max(feasible, key=lambda t: score(t, tie_weight)), trials
