"""Designs DeepN-JPEG quantization tables from a data set (FCA + PLM).

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

`run` is the job of `experiments/design_qtable.py`: band statistics of the
images (Sec. 3.2, `deepn_jpeg.statistics`), then one luma and one chroma
table per PLM variant (Sec. 3.3, `deepn_jpeg.tables.plm`), written as JSON
and `cjpeg -qtables` files with a heat-map next to standard JPEG at QF 50
(`deepn_jpeg.report`). The rate-accuracy evaluation of the tables is not
part of this job.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from compression_helps.core import checks, files, progress, rundir
from compression_helps.engine import candidates
from compression_helps.sources import datasets
from deepn_jpeg.analysis import statistics
from deepn_jpeg.jobs import report
from deepn_jpeg.jpeg import tables, tableset_files

__all__ = [
    "JOB",
    "PLOT_FILE",
    "STATISTICS_FILE",
    "SUMMARY_FILE",
    "Config",
    "Result",
    "accumulate",
    "check_config",
    "chosen_indices",
    "design_tables",
    "run",
    "select_per_class",
]

JOB = "design_qtable"
STATISTICS_FILE = "statistics.json"
SUMMARY_FILE = "summary.txt"
PLOT_FILE = "design.png"
_SHARD_NAME = "statistics"  # shards/statistics-<start>-<stop>.npz


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` computes; the flags of design_qtable.py mirror it.

    Attributes:
      data: the images; `split="fit"` keeps the "heldout" half for
        evaluating the tables.
      per_class: at most this many images per label (unlabelled images are
        all kept); None (the flag: 0): all.
      variants: PLM variants, from `tables.PLM_VARIANTS`.
      plm: PLM parameters (the "monotone" variant derives its own c).
      seed: sampling seed.
      chroma_subsampling: chroma resolution analysed, "4:4:4" (the paper) or
        "4:2:0".
      reference_quality: QF of the standard JPEG tables shown for comparison.
      shard_size: images per partial-statistics shard (the unit of resuming).
    """

    data: datasets.DataConfig = datasets.DataConfig()
    per_class: int | None = 10
    variants: tuple[str, ...] = tables.PLM_VARIANTS
    plm: tables.PlmParams = tables.PAPER_PARAMS
    seed: int = 0
    chroma_subsampling: str = "4:4:4"
    reference_quality: int = 50
    shard_size: int = 256


@dataclasses.dataclass(frozen=True)
class Result:
    """What `run` produced.

    Attributes:
      statistics: the band statistics.
      qtables: variant -> `(luma, chroma)`, `[8, 8]` int32 each.
      summary: the printed text (`report.design_summary` and skip count).
      skipped: the images that could not be analysed.
    """

    statistics: statistics.BandStatistics
    qtables: dict[str, tuple[np.ndarray, np.ndarray]]
    summary: str
    skipped: list[rundir.SkippedImage]


def check_config(config: Config) -> None:
    """Refuses settings `run` cannot use, before any image is read.

    Args:
      config: the settings.

    Raises:
      ValueError: one line naming the bad setting.
    """
    config.data.check()
    if not config.variants:
        raise ValueError("variants: give at least one PLM variant")
    for variant in config.variants:
        checks.one_of("variant", variant, tables.PLM_VARIANTS)
    if len(set(config.variants)) < len(config.variants):
        raise ValueError(f"variants repeat: {','.join(config.variants)}")
    if config.per_class is not None:
        checks.integer("per_class", config.per_class, 1, note="None: all")
    checks.integer("seed", config.seed)
    checks.one_of(
        "chroma_subsampling",
        config.chroma_subsampling,
        statistics.CHROMA_SUBSAMPLINGS,
    )
    checks.integer("reference_quality", config.reference_quality, 1, 100)
    checks.integer("shard_size", config.shard_size, 1)
    for variant in config.variants:  # Bad PLM parameters (e.g. t1 > t2).
        tables.plm(0.0, variant, **_plm_kwargs(variant, config.plm))


def select_per_class(
    labels: np.ndarray, per_class: int, seed: int = 0
) -> np.ndarray:
    """Stratified sample: at most `per_class` images of each label.

    Uniform without replacement within each class, seeded; every unlabelled
    image (label -1) is kept. Works on labels alone, so no image is read to
    choose.

    Args:
      labels: `[N]` int labels, -1 for unknown.
      per_class: maximum images per label (>= 1).
      seed: sampling seed.

    Returns:
      The chosen indices, sorted.

    Raises:
      ValueError: per_class < 1.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = [np.flatnonzero(labels < 0)]
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        if len(members) > per_class:
            members = rng.choice(members, per_class, replace=False)
        chosen.append(members)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def design_tables(
    stats: statistics.BandStatistics,
    variant: str = "paper",
    params: tables.PlmParams = tables.PAPER_PARAMS,
) -> tuple[np.ndarray, np.ndarray]:
    """DeepN-JPEG, Sec. 3.3: luma table from Y, chroma from pooled Cb/Cr.

    Args:
      stats: band statistics.
      variant: "paper" or "monotone" (see `tables.plm`).
      params: PLM parameters; "monotone" ignores `params.c`.

    Returns:
      `(luma, chroma)`, `[8, 8]` int32 each.

    Raises:
      ValueError: unknown variant, bad parameters (`tables.plm`), or no
        blocks.
    """
    kwargs = _plm_kwargs(variant, params)
    return (
        tables.plm(stats.std("luma"), variant, **kwargs),
        tables.plm(stats.std("chroma"), variant, **kwargs),
    )


def _plm_kwargs(variant: str, params: tables.PlmParams) -> dict[str, float]:
    kwargs = dataclasses.asdict(params)
    if variant == "monotone":
        del kwargs["c"]  # Derived (`tables.monotone_c`).
    return kwargs


def chosen_indices(
    source: datasets.Source, per_class: int | None, seed: int
) -> np.ndarray:
    """`[M]` sorted indices of the images a job analyses.

    Args:
      source: the images.
      per_class: at most this many per label (`select_per_class`); None: all.
      seed: the sampling seed.
    """
    if per_class is None:
        return np.arange(source.count(), dtype=np.int64)
    return select_per_class(source.labels(), per_class, seed)


def accumulate(
    run_dir: rundir.RunDir,
    shard_name: str,
    label: str,
    source: datasets.Source,
    chosen: np.ndarray,
    shard_size: int,
    compute: Callable[[tf.data.Dataset, Callable[..., None]], tuple[Any, Any]],
    work: Callable[[dict], Any],
    empty: Any,
    require_label: bool = False,
    verbose: bool = True,
) -> tuple[Any, list[rundir.SkippedImage]]:
    """Running sums over the chosen images, one resumable shard at a time.

    The one mechanism of the jobs that sum something per image (the DCT
    statistics, the band sensitivities): each shard of `chosen` is summed
    by `compute`, the images it could not use are diagnosed one by one
    (`datasets.diagnose`, re-running `work`), and the shards' sums merge.

    Args:
      run_dir: the run's folder (`map_shards`).
      shard_name: the shards' name (`shards/<shard_name>-<start>-<stop>`).
      label: what is summed, for the progress bar.
      source: the images.
      chosen: `[M]` their indices to sum.
      shard_size: images per shard (the unit of resuming).
      compute: `(dataset, progress) -> (sums, used indices)`.
      work: an eager re-run of one example, raising what made it unusable.
      empty: the sums of no image (`merge`, `to_arrays`, `from_arrays`).
      require_label: an unlabelled image is unusable too.
      verbose: show a progress bar.

    Returns:
      The merged sums and the images skipped.
    """

    def compute_shard(start: int, stop: int, report) -> dict[str, np.ndarray]:
        indices = chosen[start:stop]
        sums, done = compute(source.select(indices), report)
        missing = sorted(set(indices.tolist()) - set(done.tolist()))
        skipped = [
            datasets.diagnose(source, i, work, require_label=require_label)
            for i in missing
        ]
        return {
            **sums.to_arrays(),
            "skipped": rundir.SkippedImage.to_array(skipped),
        }

    total, skipped = empty, []
    with progress.Progress(len(chosen), "image", label, verbose=verbose) as bar:
        for arrays in run_dir.map_shards(
            shard_name, len(chosen), shard_size, compute_shard, bar
        ):
            total = total.merge(type(empty).from_arrays(arrays))
            skipped.extend(rundir.SkippedImage.from_array(arrays["skipped"]))
    return total, skipped


def _band_statistics(
    source: datasets.Source,
    config: Config,
    run_dir: rundir.RunDir,
    verbose: bool,
) -> tuple[statistics.BandStatistics, list[rundir.SkippedImage]]:
    """Statistics of the chosen images, one resumable shard at a time."""

    def work(example):  # Eager re-run of one example, for `diagnose`.
        image = candidates.decode_image(example["image_bytes"])
        return statistics.image_sums(image, config.chroma_subsampling)

    def compute(dataset, report):
        return statistics.compute_with_indices(
            dataset,
            config.chroma_subsampling,
            ignore_errors=True,
            progress=report,
        )

    return accumulate(
        run_dir,
        _SHARD_NAME,
        "DCT statistics",
        source,
        chosen_indices(source, config.per_class, config.seed),
        config.shard_size,
        compute,
        work,
        statistics.BandStatistics.empty(config.chroma_subsampling),
        verbose=verbose,
    )


def _write_tables(
    run_dir: rundir.RunDir,
    variant: str,
    qtables: tuple[np.ndarray, np.ndarray],
    stats: statistics.BandStatistics,
    config: Config,
) -> None:
    """`qtables_<variant>.json` and `.txt` (`cjpeg -qtables`)."""
    luma, chroma = qtables
    params: dict[str, Any] = dataclasses.asdict(config.plm)
    if variant == "monotone":
        params["c"] = tables.monotone_c(config.plm)
    metadata = {
        "variant": variant,
        "plm": params,
        "num_images": stats.num_images,
        "data": config.data.name,
        "split": config.data.split,
        "split_seed": config.data.split_seed,
        "chroma_subsampling": stats.chroma_subsampling,
    }
    comment = (
        f"DeepN-JPEG tables (PLM {variant}) from {stats.num_images} images "
        f"of {config.data.name}"
    )
    tableset_files.write_tableset(
        run_dir, variant, luma, chroma, comment, metadata
    )


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> Result:
    """Computes statistics and tables; writes them to `workdir`.

    Writes `config.json`, `statistics.json`, `qtables_<variant>.json` and
    `.txt` (`cjpeg -qtables`) for each variant, `summary.txt`, `design.png`
    and `errors.jsonl` (images that could not be decoded, skipped), each
    atomically. The partial statistics of each shard of images are kept in
    `<workdir>/shards/`; `resume` reuses them after an interruption.

    Args:
      config: what to compute.
      workdir: output directory (see `rundir.RunDir.open`).
      resume: continue an interrupted run in `workdir` (same config, same
        data).
      verbose: show a progress bar.

    Returns:
      The statistics, tables, summary text and skipped images.

    Raises:
      ValueError: bad settings; a workdir that is not this job's, in use,
        or (resume) of other settings or data; no images with whole 8x8
        blocks.
      FileNotFoundError: no such image folder.
    """
    check_config(config)
    data = config.data.resolved()
    source = data.load()
    config = dataclasses.replace(config, data=data)
    with rundir.RunDir.open(
        workdir, JOB, config, resume, data=source.fingerprint
    ) as run_dir:
        stats, skipped = _band_statistics(source, config, run_dir, verbose)
        run_dir.write_errors(skipped)
        if not stats.count("luma") or not stats.count("chroma"):
            raise ValueError(
                f"{source.description}: no image has a whole 8x8 block"
            )
        stats.save(run_dir.path(STATISTICS_FILE))
        qtables = {}
        for variant in config.variants:
            qtables[variant] = design_tables(stats, variant, config.plm)
            _write_tables(run_dir, variant, qtables[variant], stats, config)
        summary = report.design_summary(
            stats, qtables, config.reference_quality
        )
        if skipped:
            errors = os.path.join(run_dir.root, rundir.ERRORS_FILE)
            summary += f"\n\n{len(skipped)} images skipped (see {errors})"
        run_dir.write_text(SUMMARY_FILE, summary + "\n")
        with files.atomic_path(run_dir.path(PLOT_FILE)) as tmp_path:
            report.plot_design(
                tmp_path, stats, qtables, config.reference_quality
            )
    return Result(stats, qtables, summary, skipped)
