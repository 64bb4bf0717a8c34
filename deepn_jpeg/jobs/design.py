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
from typing import Any

import numpy as np

from compression_helps.core import checks, files, rundir
from compression_helps.engine import candidates, job
from compression_helps.sources import datasets
from deepn_jpeg.analysis import image_sums, statistics
from deepn_jpeg.jobs import report
from deepn_jpeg.jpeg import tables, tableset_files

__all__ = [
    "JOB",
    "PLOT_FILE",
    "STATISTICS_FILE",
    "SUMMARY_FILE",
    "Config",
    "Result",
    "check_config",
    "design_tables",
    "run",
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

    return image_sums.accumulate(
        run_dir,
        _SHARD_NAME,
        "DCT statistics",
        source,
        image_sums.chosen_indices(source, config.per_class, config.seed),
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
    config: Config,
    workdir: str,
    resume: bool = False,
    verbose: bool = True,
    given: job.Given | None = None,
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
      given: the images of a calling job (`job.Given`).

    Returns:
      The statistics, tables, summary text and skipped images.

    Raises:
      ValueError: bad settings; a workdir that is not this job's, in use,
        or (resume) of other settings or data; no images with whole 8x8
        blocks.
      FileNotFoundError: no such image folder.
    """
    with job.open_job(
        JOB, config, workdir, check_config, resume, given=given
    ) as opened:
        config, source, run_dir = opened.config, opened.source, opened.run
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
