"""Quantization tables fitted to a model at byte budgets (not in the paper).

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

DeepN-JPEG designs its tables from the images' DCT statistics alone (FCA,
Sec. 3.2, and the PLM, Sec. 3.3); the model never enters the design. With
the PLM defaults of SPEC.md the tables need *more* bytes than standard JPEG
at equal top-1 (the chroma steps of 170-245 erase most colour). This module
fits a table family to a model on the "fit" half of the images
(`datasets.split`) instead:

- A byte budget is the total size of the fit images written as standard
  JPEG at one QF (the encoder of every table here, `codec.encode`).
- Each parameter vector of a family (`deepn_jpeg.families`) gives a (luma,
  chroma) table pair; one common factor scales both until the files are
  just within the budget (`fit_scale`, encodings only); then the model
  classifies the files once. So every trial is compared at equal bytes.
- Nelder-Mead (scipy), from the family's unfitted start (trial 0),
  maximises `score`: top-1 plus `tie_weight` times the true label's mean
  probability (smoother than top-1 alone on a few hundred images). The
  best trial wins, the start on ties, so a fitted table never scores lower
  than the start on the images it was fitted on.

Images are evaluated by `in_memory.InMemoryImages` and trials scored by
`evaluate.accuracy`, so a table scores here what `rate_accuracy` reports
on the same images. Every trial is appended to `trials.jsonl`; `resume`
replays it (the optimiser asks for the same trials in the same order) and
goes on. The fitted tables are written as `qtables_fit-<family>-qf<Q>`
`.json` and `.txt` (`cjpeg -qtables`) for `rate_accuracy` to evaluate on
the "heldout" half.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import scipy.optimize
from absl import logging

from compression_helps import (
    candidates,
    checks,
    datasets,
    evaluate,
    in_memory,
    models,
    progress,
    rundir,
)
from deepn_jpeg import (
    codec,
    families,
    rate_accuracy,
    report,
    statistics,
    tables,
)

__all__ = [
    "JOB",
    "SUMMARY_FILE",
    "TRIALS_FILE",
    "Config",
    "check_config",
    "fit_scale",
    "run",
    "score",
    "smoke",
]

JOB = "fit_qtable"
TRIALS_FILE = "trials.jsonl"
SUMMARY_FILE = "fit_summary.json"
# log(bytes) / log(scale) assumed until two encodings give a measured one.
_DEFAULT_BYTES_SLOPE = -0.7
_MAX_SCALE_PASSES = 16
_LOG_SCALE_RANGE = (math.log(1e-3), math.log(1e3))
# Nelder-Mead's first simplex: this fraction of each parameter's range.
_SIMPLEX_STEP = 0.15


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` fits; the flags of fit_qtable.py mirror it.

    Attributes:
      model: the classifier the tables are fitted to.
      data: the images; the search sees only the "fit" half of the split
        (its `split` is always "fit").
      families: table families to fit, from `families.FAMILIES`.
      budget_qualities: one byte budget per QF: the total bytes of standard
        JPEG at that QF on the fit images. The defaults lie 1-5 top-1
        points below the original files for efficientnet_lite0 on the fit
        half of the sample images.
      max_trials: parameter vectors tried per family and budget.
      tie_weight: score = top-1 + tie_weight * mean true-label probability.
      budget_tolerance: a table pair is accepted with bytes in
        [(1 - budget_tolerance) * budget, budget].
      subsampling: chroma subsampling of every file.
      batch_size: images per model call.
      seed: global random seed.
    """

    model: models.ModelConfig = models.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig(split="fit")
    families: tuple[str, ...] = families.FAMILIES
    budget_qualities: tuple[int, ...] = (80, 60, 40)
    max_trials: int = 40
    tie_weight: float = 1.0
    budget_tolerance: float = 0.01
    subsampling: str = "4:2:0"
    batch_size: int = 25
    seed: int = 0


def smoke(config: Config) -> Config:
    """A quick check: the fit half (16) of the first 32 images, one budget.

    Args:
      config: the settings to shrink.

    Returns:
      Its first budget, 3 trials, on 16 fit images.
    """
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, limit=32),
        budget_qualities=config.budget_qualities[:1],
        max_trials=3,
    )


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


def _measure(
    images: in_memory.InMemoryImages, codecs: Sequence[candidates.Codec]
) -> dict:
    """Bytes and accuracy of the original files (no codec) or one codec's."""
    predictions = images.predict(codecs, with_original=not codecs)
    return {
        "feasible": True,
        "bytes": int(predictions.sizes[:, 0].sum()),
        **evaluate.accuracy(predictions, 0),
    }


def _search(
    family: families.Family,
    quality: int,
    budget: int,
    images: in_memory.InMemoryImages,
    log: rundir.JsonlCache,
    config: Config,
) -> tuple[dict, list[dict]]:
    """Fits one family at one budget; returns the best trial and all."""
    trials: list[dict] = []
    # The first scale tried: the IJG factor of the budget's QF, then the
    # last feasible trial's (replays see the same sequence).
    scale_guess = [tables.ijg_scale_factor(quality) / 100.0]

    def table_codec(x: np.ndarray, scale: float) -> candidates.Codec:
        luma, chroma = family.shape(x, scale)
        return rate_accuracy.table_codec(
            f"fit-{family.name}", quality, luma, chroma, config.subsampling
        )

    def compute(x: np.ndarray) -> dict:
        begin = time.time()
        scale, nbytes, passes = fit_scale(
            lambda s: int(images.sizes([table_codec(x, s)]).sum()),
            budget,
            scale_guess[0],
            config.budget_tolerance,
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
            record.update(_measure(images, [table_codec(x, scale)]))
        record["seconds"] = round(time.time() - begin, 2)
        return record

    def objective(unit: np.ndarray) -> float:
        if len(trials) >= config.max_trials:
            raise _TrialsDone  # Ends the optimiser; caught below.
        x = family.from_unit(unit)
        # The key fixes a trial's result (with the config of `run`).
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
        return -score(record, config.tie_weight)

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
            options={"initial_simplex": simplex, "maxfev": config.max_trials},
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
    return max(feasible, key=lambda t: score(t, config.tie_weight)), trials


def _export(run_dir: rundir.RunDir, name: str, best: dict, comment: str):
    luma, chroma = np.array(best["luma"]), np.array(best["chroma"])
    keys = ("family", "params", "scale", "budget_quality", "budget_bytes")
    keys += ("bytes", "top1", "top5", "mean_prob", "trial")
    run_dir.write_text(
        tables.qtables_filename(name, "json"),
        tables.to_json(luma, chroma, {k: best[k] for k in keys}),
    )
    run_dir.write_text(
        tables.qtables_filename(name, "txt"),
        tables.to_cjpeg_qtables(
            [luma, chroma],
            comment=comment + "\nslot 0: luma, slot 1: chroma; natural order; "
            "cjpeg -qtables FILE -qslots 0,1 (no -quality)",
        ),
    )


def _fit_budget(
    quality: int,
    images: in_memory.InMemoryImages,
    stats: statistics.BandStatistics | None,
    log: rundir.JsonlCache,
    run_dir: rundir.RunDir,
    config: Config,
) -> dict:
    """Standard JPEG at QF `quality`, and each family fitted to its bytes."""
    luma, chroma = tables.standard_qtables(quality)
    jpeg_codec = rate_accuracy.table_codec(
        candidates.JPEG, quality, luma, chroma, config.subsampling
    )
    jpeg = log.get_or_compute(
        f"jpeg|{quality}", lambda: _measure(images, [jpeg_codec])
    )
    budget = {"quality": quality, "jpeg": jpeg, "fitted": []}
    for name in config.families:
        family = families.make_family(name, stats)
        best, trials = _search(
            family, quality, jpeg["bytes"], images, log, config
        )
        table_name = f"fit-{name}-qf{quality}"
        comment = (
            f"{name} tables fitted to {config.model.name} at the bytes of "
            f"standard JPEG QF {quality} on {images.description}: top-1 "
            f"{best['top1']:.2f} % (JPEG {jpeg['top1']:.2f} %)"
        )
        _export(run_dir, table_name, best, comment)
        budget["fitted"].append(
            {
                "family": name,
                "name": table_name,
                "num_trials": len(trials),
                "start": trials[0],
                "best": best,
            }
        )
    return budget


def check_config(config: Config) -> None:
    """Refuses settings `run` cannot use, before any image or model is read.

    Args:
      config: the settings.

    Raises:
      ValueError: one line naming the bad setting.
    """
    config.model.check()
    checks.data(config.data)
    if not config.families:
        raise ValueError("no table family to fit")
    for name in config.families:
        checks.one_of("family", name, families.FAMILIES)
    candidates.validate_qualities(config.budget_qualities)
    codec.check_subsampling(config.subsampling)
    checks.integer("max_trials", config.max_trials, 1)
    checks.integer("batch_size", config.batch_size, 1)
    checks.integer("seed", config.seed)
    checks.number(
        "budget_tolerance", config.budget_tolerance, 0, 1, open_interval=True
    )
    checks.number("tie_weight", config.tie_weight, 0)


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Fits each family at each byte budget on the fit images; exports.

    Writes to `workdir`: `config.json`, `trials.jsonl` (every trial),
    `errors.jsonl` (images left out),
    `qtables_fit-<family>-qf<quality>.json` and `.txt` per family and
    budget, and `fit_summary.json`.

    Args:
      config: what to fit.
      workdir: output directory (see `rundir.RunDir.open`).
      resume: replay the trials logged in `workdir` (same settings, data
        and model; `max_trials` may grow) instead of computing them again;
        else the log starts empty.
      verbose: print the summary table.

    Returns:
      The summary: original files, and per budget standard JPEG and each
      family's start and best trials, on the fit images.

    Raises:
      ValueError: bad settings (before the model loads), resuming with
        other settings, or a budget no table of a family meets.
    """
    check_config(config)
    data = dataclasses.replace(config.data, split="fit").resolved()
    config = dataclasses.replace(
        config,
        data=data,
        families=tuple(config.families),
        budget_qualities=tuple(int(q) for q in config.budget_qualities),
    )
    source = data.load()
    with rundir.RunDir.open(
        workdir,
        JOB,
        config,
        resume,
        data=source.fingerprint,
        inputs=config.model.input_files(),
        # More trials continue the same deterministic search: the log replays.
        may_change=("max_trials",),
    ) as run_dir:
        keras.utils.set_random_seed(config.seed)
        # Only the "plm" family starts from the statistics: those of all the
        # fit images (design_qtable.py --split=fit --per_class=0's
        # "monotone" tables).
        stats = (
            statistics.compute(source.dataset, ignore_errors=True)
            if "plm" in config.families
            else None
        )
        images = in_memory.InMemoryImages(
            config.model.load(), source, config.batch_size
        )
        run_dir.write_errors(images.skipped)
        # The original, then per budget standard JPEG and each family's
        # trials (a search may stop before its last trial).
        shown = progress.Progress(
            1
            + len(config.budget_qualities)
            * (1 + len(config.families) * config.max_trials),
            "measurement",
            "fitting tables",
            verbose=verbose,
        )
        log = run_dir.cache(TRIALS_FILE, shown.add)
        summary = {
            "model": config.model.name,
            "images": source.description,
            "n_images": images.num_images,
            "n_errors": len(images.skipped),
            "original": log.get_or_compute(
                "original", lambda: _measure(images, [])
            ),
            "budgets": [],
        }
        with shown:
            for quality in config.budget_qualities:
                summary["budgets"].append(
                    _fit_budget(quality, images, stats, log, run_dir, config)
                )
        summary["trials_computed"] = log.computed
        summary["trials_replayed"] = log.replayed
        run_dir.write_json(SUMMARY_FILE, summary)
    if verbose:
        print(report.fit_summary_text(summary))
        print(
            f"\n{log.computed} measurements computed, {log.replayed} "
            f"replayed from {log.path}"
        )
    return summary
