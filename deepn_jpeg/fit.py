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
  JPEG at one QF (same encoder, `codec.encode`, as every other file here).
- Each candidate parameter vector gives a (luma, chroma) table pair; one
  common factor scales both until the files are just within the budget
  (`fit_scale`: a 1-D search on bytes, encodings only). Then the model
  classifies the files once. So every trial is compared at equal bytes.
- `scipy.optimize.minimize(method="Nelder-Mead")`, from the family's
  unfitted start (trial 0), maximises `score`: top-1 plus `tie_weight`
  times the true label's mean probability (both in percent; smoother than
  top-1 alone on a few hundred images). The best trial wins, the start on
  ties, so a fitted table never scores lower than the start on the images
  it was fitted on.

Families (`FAMILIES`):
  "plm": the PLM of Sec. 3.3 ("monotone" variant, a = 255, continuous at
    T1 and T2) of the luma and the pooled Cb/Cr band std of the fit images,
    with free T1, T2, k1, k2, k3, Qmin and a chroma-to-luma scale ratio
    (with the common budget scale: separate luma and chroma scales).
  "standard": the Annex K tables, each tilted along the frequency diagonal
    (step * exp(tilt * ((u + v) / 14 - 1/2))), with a chroma-to-luma scale
    ratio.

Every trial is appended to `<workdir>/trials.jsonl`; with `resume` the log
is replayed instead of recomputed (the optimiser is deterministic, so it
asks for the same trials in the same order), and the search goes on where
it stopped. The fitted tables are written as `qtables_fit-<family>-qf<Q>`
`.json` and `.txt` (`cjpeg -qtables`) for `rate_accuracy` to evaluate on
the "heldout" half.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import scipy.optimize
import tensorflow as tf
from absl import logging

from compression_helps import candidates, datasets, evaluate, models
from compression_helps import workdir as workdir_lib
from deepn_jpeg import codec, design, statistics, tables

__all__ = [
    "FAMILIES",
    "SUMMARY_FILE",
    "TRIALS_FILE",
    "Config",
    "Family",
    "TrialEvaluator",
    "fit_scale",
    "make_family",
    "run",
    "score",
    "summary_text",
]

FAMILIES = ("plm", "standard")
TRIALS_FILE = "trials.jsonl"
SUMMARY_FILE = "fit_summary.json"
# log(bytes) / log(scale) assumed until two encodings give a measured one.
_DEFAULT_BYTES_SLOPE = -0.7
_MAX_SCALE_PASSES = 16
_LOG_SCALE_RANGE = (math.log(1e-3), math.log(1e3))
# Nelder-Mead's first simplex: this fraction of each parameter's range.
_SIMPLEX_STEP = 0.15
# A band's distance from DC along the diagonal, 0 (DC) .. 1 (highest).
_DIAGONAL = np.add.outer(np.arange(8), np.arange(8)) / 14.0


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` fits; the flags of fit_qtable.py mirror it.

    Attributes:
      model: registry name or Keras model file.
      weights: "imagenet", a weights file, or None.
      data: folder or `tfds:<name>[:<split>]`; empty: the sample images.
      limit: only the first `limit` images, before splitting.
      tfds_data_dir: TFDS data dir for `tfds:` sources.
      split_seed: seed of `datasets.split`; the search sees only the "fit"
        half.
      families: table families to fit, from `FAMILIES`.
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
      num_threads: encoder threads (0: one per CPU).
      seed: global random seed.
    """

    model: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    data: str = ""
    limit: int | None = None
    tfds_data_dir: str | None = None
    split_seed: int = 0
    families: tuple[str, ...] = FAMILIES
    budget_qualities: tuple[int, ...] = (80, 60, 40)
    max_trials: int = 40
    tie_weight: float = 1.0
    budget_tolerance: float = 0.01
    subsampling: str = "4:2:0"
    batch_size: int = 25
    num_threads: int = 0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Family:
    """A parametric family of (luma, chroma) table pairs.

    Attributes:
      name: family name (`FAMILIES`).
      param_names: the searched parameters.
      start: the unfitted design's parameters.
      lower: lower bounds.
      upper: upper bounds.
      shape: `(params [P], scale) -> (luma, chroma)`, `[8, 8]` int32 each;
        `scale` multiplies both tables before rounding (the budget factor).
    """

    name: str
    param_names: tuple[str, ...]
    start: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    shape: Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]

    def from_unit(self, unit: Sequence[float]) -> np.ndarray:
        """[0, 1]^P (the optimiser's box) -> parameters within the bounds."""
        lower, upper = np.array(self.lower), np.array(self.upper)
        return lower + np.clip(unit, 0.0, 1.0) * (upper - lower)

    def to_unit(self, params: Sequence[float]) -> np.ndarray:
        """Parameters -> [0, 1]^P."""
        lower, upper = np.array(self.lower), np.array(self.upper)
        return (np.asarray(params, np.float64) - lower) / (upper - lower)


def _plm_family(stats: statistics.BandStatistics) -> Family:
    luma_std, chroma_std = stats.std("luma"), stats.std("chroma")
    p = tables.PAPER_PARAMS

    def shape(x, scale):
        log_chroma_ratio, t1, t2, k1, k2, k3, q_min = map(float, x)
        # b makes the mapping continuous at T1 (as the defaults are); the
        # "monotone" variant makes it continuous at T2. The PLM is linear in
        # (a, b, k1..k3, Qmin), so scaling them scales the steps.
        b = p.a - (k1 - k2) * t1

        def mapped(std, factor):
            return tables.plm(
                std,
                "monotone",
                a=p.a * factor,
                b=b * factor,
                t1=t1,
                t2=max(t1, t2),
                k1=k1 * factor,
                k2=k2 * factor,
                k3=k3 * factor,
                q_min=q_min * factor,
            )

        return (
            mapped(luma_std, scale),
            mapped(chroma_std, scale * math.exp(log_chroma_ratio)),
        )

    return Family(
        name="plm",
        param_names=("log_chroma_ratio", "t1", "t2", "k1", "k2", "k3", "q_min"),
        start=(0.0, p.t1, p.t2, p.k1, p.k2, p.k3, p.q_min),
        lower=(-4.0, 1.0, 5.0, 0.0, 0.0, 0.0, 1.0),
        upper=(2.0, 60.0, 200.0, 20.0, 5.0, 10.0, 40.0),
        shape=shape,
    )


def _standard_family() -> Family:
    def shape(x, scale):
        log_chroma_ratio, luma_tilt, chroma_tilt = map(float, x)
        luma = tables.STANDARD_LUMA_QTABLE * np.exp(
            luma_tilt * (_DIAGONAL - 0.5)
        )
        chroma = tables.STANDARD_CHROMA_QTABLE * np.exp(
            log_chroma_ratio + chroma_tilt * (_DIAGONAL - 0.5)
        )
        # Round half up into baseline 8-bit steps, as `tables.plm`.
        return tuple(
            np.clip(np.floor(scale * t + 0.5), 1, 255).astype(np.int32)
            for t in (luma, chroma)
        )

    return Family(
        name="standard",
        param_names=("log_chroma_ratio", "luma_tilt", "chroma_tilt"),
        start=(0.0, 0.0, 0.0),
        lower=(-3.0, -3.0, -3.0),
        upper=(3.0, 3.0, 3.0),
        shape=shape,
    )


def make_family(
    name: str, stats: statistics.BandStatistics | None = None
) -> Family:
    """A table family by name.

    Args:
      name: one of `FAMILIES`.
      stats: band statistics of the fit images (needed by "plm").

    Returns:
      The `Family`. At its start and scale 1, "plm" gives the DeepN-JPEG
      "monotone" tables of `stats` and "standard" the QF 50 tables.

    Raises:
      ValueError: unknown name, or "plm" without statistics.
    """
    if name == "plm":
        if stats is None:
            raise ValueError("the plm family needs band statistics")
        return _plm_family(stats)
    if name == "standard":
        return _standard_family()
    raise ValueError(f"family must be one of {FAMILIES}, got {name!r}")


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


class TrialEvaluator:
    """Writes and classifies a fixed set of images, as cheaply as possible.

    The originals are decoded once and kept; the model step
    (`evaluate.classify_fn`) is traced once; the files are written by a
    thread pool (Pillow releases the GIL while encoding). Decoding, the
    model's crop and resize and the rounding to uint8 are those of
    `candidates.make_candidates`, so a table's numbers equal those
    `rate_accuracy` gives on the same images.
    """

    def __init__(
        self,
        classifier: models.Classifier,
        images_uint8: Sequence[np.ndarray],
        labels: np.ndarray,
        batch_size: int = 25,
        subsampling: str = "4:2:0",
        num_threads: int = 0,
    ):
        """Keeps the images, builds the model step and the encoder threads.

        Args:
          classifier: the model and its preprocessing.
          images_uint8: decoded originals, `[H, W, 3]` uint8 each.
          labels: `[N]` true class indices.
          batch_size: images per model call.
          subsampling: chroma subsampling of every file.
          num_threads: encoder threads (0: one per CPU).
        """
        codec.check_subsampling(subsampling)
        self.images = list(images_uint8)
        self.labels = np.asarray(labels, np.int32)
        self.num_pixels = sum(i.shape[0] * i.shape[1] for i in self.images)
        self._resize = classifier.resize
        self._batch_size = batch_size
        self._subsampling = subsampling
        self._classify = evaluate.classify_fn(classifier, batch_size)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            num_threads or os.cpu_count() or 1
        )

    def close(self) -> None:
        """Stops the encoder threads."""
        self._pool.shutdown()

    def encode(self, luma: np.ndarray, chroma: np.ndarray) -> list[bytes]:
        """Every image written with the given tables (`codec.encode`)."""
        return list(
            self._pool.map(
                lambda image: codec.encode(
                    image, luma, chroma, self._subsampling
                ),
                self.images,
            )
        )

    def classify(self, files: Sequence[bytes]) -> dict[str, float]:
        """Accuracy of the model on one file per image.

        Args:
          files: `[N]` image files in image order.

        Returns:
          "top1", "top5" and "mean_prob" in percent; "mean_prob" is the
          mean probability of the true label, counted as 0 where it is not
          in the top 5 (`classify_fn` returns only the top 5).
        """

        def pixels(image_bytes):  # As `candidates.make_candidates`.
            image = self._resize(candidates.decode_image(image_bytes))
            return tf.cast(tf.round(image), tf.uint8)[None]  # [1, S, S, 3]

        dataset = tf.data.Dataset.from_tensor_slices(
            (np.array(files, dtype=object), self.labels)
        )
        dataset = dataset.map(
            lambda f, label: (pixels(f), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        dataset = dataset.batch(self._batch_size).prefetch(tf.data.AUTOTUNE)
        ranks, probs = [], []
        for batch_pixels, batch_labels in dataset:
            rank, _, top_probs = self._classify(batch_pixels, batch_labels)
            rank, top_probs = rank.numpy()[:, 0], top_probs.numpy()[:, 0]
            in_top = rank <= evaluate.TOP_K
            index = np.minimum(rank, evaluate.TOP_K) - 1
            true_prob = np.take_along_axis(top_probs, index[:, None], 1)
            ranks.append(rank)
            probs.append(np.where(in_top, true_prob[:, 0], 0.0))
        rank, prob = np.concatenate(ranks), np.concatenate(probs)
        return {
            "top1": 100.0 * float(np.mean(rank <= 1)),
            "top5": 100.0 * float(np.mean(rank <= 5)),
            "mean_prob": 100.0 * float(np.mean(prob, dtype=np.float64)),
        }


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


class _TrialLog:
    """trials.jsonl, doubling as the cache of computed trials."""

    def __init__(self, path: str):
        self.path = path
        self.records: dict[str, dict] = {}
        self.computed = self.replayed = 0
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # A line cut by an interruption.
                    self.records[record["key"]] = record

    def get_or_compute(self, key: str, compute: Callable[[], dict]) -> dict:
        """The logged record of `key`, or `compute()`'s, appended to the log."""
        record = self.records.get(key)
        if record is not None:
            self.replayed += 1
            return record
        record = compute()
        self.computed += 1
        self.records[key] = record
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        return record


def _load_images(
    source: datasets.Source,
) -> tuple[list[np.ndarray], np.ndarray, list[bytes]]:
    """Decoded originals, labels, original files; bad images dropped."""
    dataset = source.dataset.filter(lambda e: e["label"] >= 0)
    dataset = dataset.map(
        lambda e: (
            candidates.decode_image(e["image_bytes"]),
            e["label"],
            e["image_bytes"],
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).ignore_errors()
    images, labels, files = [], [], []
    for image, label, image_bytes in dataset:
        images.append(image.numpy())
        labels.append(int(label))
        files.append(image_bytes.numpy())
    if len(images) < source.num_examples:
        logging.warning(
            "%d images without label or undecodable: not used",
            source.num_examples - len(images),
        )
    if not images:
        raise ValueError(f"{source.description}: no image could be decoded")
    return images, np.array(labels, np.int32), files


def _measure(
    log: _TrialLog, key: str, evaluator: TrialEvaluator, files_fn
) -> dict:
    """A logged or new measurement of fixed files (original, JPEG QF)."""

    def compute() -> dict:
        files = files_fn()
        record = {"key": key, "feasible": True, "bytes": sum(map(len, files))}
        record.update(evaluator.classify(files))
        return record

    return log.get_or_compute(key, compute)


def _search(
    family: Family,
    quality: int,
    budget: int,
    evaluator: TrialEvaluator,
    log: _TrialLog,
    config: Config,
) -> tuple[dict, list[dict]]:
    """Fits one family at one budget; returns the best trial and all."""
    trials: list[dict] = []
    # The first scale tried: the IJG factor of the budget's QF, then the
    # last feasible trial's (replays see the same sequence).
    scale_guess = [tables.ijg_scale_factor(quality) / 100.0]

    def compute(x: np.ndarray, key: str) -> dict:
        begin = time.time()
        encoded: dict[float, list[bytes]] = {}

        def total_bytes(scale: float) -> int:
            encoded[scale] = evaluator.encode(*family.shape(x, scale))
            return sum(len(f) for f in encoded[scale])

        scale, nbytes, passes = fit_scale(
            total_bytes, budget, scale_guess[0], config.budget_tolerance
        )
        record = {
            "key": key,
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
                scale=scale,
                bytes=nbytes,
                luma=luma.tolist(),
                chroma=chroma.tolist(),
                **evaluator.classify(encoded[scale]),
            )
        record["seconds"] = round(time.time() - begin, 2)
        return record

    def objective(unit: np.ndarray) -> float:
        if len(trials) >= config.max_trials:
            raise _TrialsDone  # Ends the optimiser; caught below.
        x = family.from_unit(unit)
        # The key fixes a trial's result (with the config of `run`).
        key = "|".join([family.name, str(quality), *(f"{v:.12g}" for v in x)])
        record = log.get_or_compute(key, lambda: compute(x, key))
        record = {**record, "trial": len(trials)}
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


def _export(workdir: str, name: str, best: dict, comment: str) -> None:
    luma, chroma = np.array(best["luma"]), np.array(best["chroma"])
    keys = ("family", "params", "scale", "budget_quality", "budget_bytes")
    keys += ("bytes", "top1", "top5", "mean_prob", "trial")
    metadata = {k: best[k] for k in keys}
    tables.save_json(
        design.qtables_path(workdir, name, "json"), luma, chroma, metadata
    )
    tables.write_cjpeg_qtables(
        design.qtables_path(workdir, name, "txt"),
        [luma, chroma],
        comment=comment + "\nslot 0: luma, slot 1: chroma; natural order; "
        "cjpeg -qtables FILE -qslots 0,1 (no -quality)",
    )


def summary_text(summary: dict) -> str:
    """The search's result per budget, on the fit images, as markdown.

    Args:
      summary: the dict `run` returns (and writes to `fit_summary.json`).

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
            rows.append((f"{fitted['family']} start", "", fitted["start"]))
            best = fitted["best"]
            rows.append(
                (
                    fitted["name"],
                    f"{best['trial']} of {fitted['num_trials']}",
                    best,
                )
            )
        for label, trial, t in rows:
            lines.append(
                f"| QF {budget['quality']} | {label} | {trial} | "
                f"{t['bytes'] / 1024:.0f} | {t['top1']:.2f} | "
                f"{t['top5']:.2f} | {t['mean_prob']:.2f} |"
            )
    return "\n".join(lines)


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Fits each family at each byte budget on the fit images; exports.

    Writes to `workdir`: `config.json`, `trials.jsonl` (every trial),
    `qtables_fit-<family>-qf<quality>.json` and `.txt` per family and
    budget, and `fit_summary.json`.

    Args:
      config: what to fit.
      workdir: output directory (created).
      resume: replay the trials logged in `workdir` (same config) instead
        of computing them again; else the log starts empty.
      verbose: print the summary table.

    Returns:
      The summary: original files, and per budget standard JPEG and each
      family's start and best trials, on the fit images.

    Raises:
      ValueError: bad settings, resuming with other settings, or a budget
        no table of a family meets.
    """
    for name in config.families:
        if name not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {name!r}")
    if config.max_trials < 1:
        raise ValueError(f"max_trials must be >= 1, got {config.max_trials}")
    candidates.validate_qualities(config.budget_qualities)
    workdir_lib.prepare(workdir)
    # More trials continue the same deterministic search: the log replays.
    workdir_lib.write_config(
        workdir, config, resume, may_change=("max_trials",)
    )
    log_path = os.path.join(workdir, TRIALS_FILE)
    if not resume and os.path.exists(log_path):
        os.remove(log_path)
    keras.utils.set_random_seed(config.seed)
    source = datasets.split(
        datasets.load(
            config.data or datasets.sample_images_dir(),
            config.limit,
            config.tfds_data_dir,
        ),
        "fit",
        config.split_seed,
    )
    # The "plm" start is then design_qtable.py --split=fit's "monotone".
    stats = statistics.compute(source.dataset, ignore_errors=True)
    images, labels, originals = _load_images(source)
    evaluator = TrialEvaluator(
        models.load_classifier(config.model, config.weights),
        images,
        labels,
        config.batch_size,
        config.subsampling,
        config.num_threads,
    )
    log = _TrialLog(log_path)
    summary = {
        "model": config.model,
        "images": source.description,
        "n_images": len(labels),
        "original": _measure(log, "original", evaluator, lambda: originals),
        "budgets": [],
    }
    try:
        for quality in config.budget_qualities:
            jpeg = _measure(
                log,
                f"jpeg|{quality}",
                evaluator,
                lambda q=quality: evaluator.encode(*tables.standard_qtables(q)),
            )
            budget = {"quality": quality, "jpeg": jpeg, "fitted": []}
            for name in config.families:
                best, trials = _search(
                    make_family(name, stats),
                    quality,
                    jpeg["bytes"],
                    evaluator,
                    log,
                    config,
                )
                table_name = f"fit-{name}-qf{quality}"
                _export(
                    workdir,
                    table_name,
                    best,
                    f"{name} tables fitted to {config.model} at the bytes of "
                    f"standard JPEG QF {quality} on {source.description}: "
                    f"top-1 {best['top1']:.2f} % (JPEG {jpeg['top1']:.2f} %)",
                )
                budget["fitted"].append(
                    {
                        "family": name,
                        "name": table_name,
                        "num_trials": len(trials),
                        "start": trials[0],
                        "best": best,
                    }
                )
            summary["budgets"].append(budget)
    finally:
        evaluator.close()
    summary["trials_computed"] = log.computed
    summary["trials_replayed"] = log.replayed
    with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    if verbose:
        print(summary_text(summary))
        print(
            f"\n{log.computed} measurements computed, {log.replayed} "
            f"replayed from {log_path}"
        )
    return summary
