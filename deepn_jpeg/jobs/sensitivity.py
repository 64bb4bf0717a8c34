"""The sensitivity-tables job: JPEG tables from a model's band sensitivities.

Ahmed H. Salamah, Kaixiang Zheng, Linfeng Ye, En-Hui Yang. "JPEG Compliant
Compression for DNN Vision." ICIP 2023; extended in IEEE JSAIT 2024 (OptS).
`band_sensitivity` measures, after OptS, how much the model's loss reacts to
each DCT band and turns that into tables (SPEC.md, "Sensitivity tables
(ours, after OptS)"); this job runs it over a data set, one resumable shard
of images at a time, and writes the sums, the tables and a summary.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from compression_helps.core import checks, rundir
from compression_helps.engine import candidates, job
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.analysis import band_sensitivity, dct_pixels, image_sums
from deepn_jpeg.jpeg import tables, tableset_files

__all__ = [
    "JOB",
    "SENSITIVITY_FILE",
    "SUMMARY_FILE",
    "TABLES_NAME",
    "BandSensitivity",
    "Config",
    "Result",
    "check_config",
    "qtables",
    "run",
]

JOB = "measure_sensitivity"
SENSITIVITY_FILE = "sensitivity.npz"
SUMMARY_FILE = "summary.txt"
TABLES_NAME = "sensitivity"  # qtables_sensitivity.json: curve "sensitivity".
_SHARD_NAME = "sensitivity"
# The `Config` fields that are `band_sensitivity.compute_with_indices`
# arguments.
_COMPUTE_SETTINGS = (
    "loss",
    "chroma_subsampling",
    "upsampling",
    "probes",
    "seed",
    "batch_size",
)
# What `run` computes, by the names its callers know.
BandSensitivity = band_sensitivity.BandSensitivity
qtables = band_sensitivity.qtables


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` computes; the flags of measure_sensitivity.py mirror it.

    Attributes:
      model: the classifier whose sensitivities are measured.
      data: the images; `split="fit"` keeps the "heldout" half for
        evaluating the tables.
      per_class: at most this many images per label
        (`image_sums.select_per_class`); None (the flag: 0): all.
      loss: "kl" (label-free: the Fisher information of the model's own
        prediction) or "xent" (cross-entropy with the true labels;
        unlabelled images are skipped).
      probes: random-sign probes per image for "kl", one backward pass
        each; more probes, less variance.
      chroma_subsampling: the chroma grid the tables are for, "4:2:0" (as
        the rate-accuracy job encodes) or "4:4:4".
      upsampling: the decoder's 4:2:0 chroma upsampling, "fancy" (libjpeg's
        default) or "nearest".
      seed: seed of the probes and of the per-class sample.
      batch_size: images per model call.
      shard_size: images per partial-sums shard (the unit of resuming).
    """

    model: registry.ModelConfig = registry.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    per_class: int | None = None
    loss: str = "kl"
    probes: int = 1
    chroma_subsampling: str = "4:2:0"
    upsampling: str = "fancy"
    seed: int = 0
    batch_size: int = 8
    shard_size: int = 64


@dataclasses.dataclass(frozen=True)
class Result:
    """What `run` produced.

    Attributes:
      sensitivity: the sums.
      qtables: `(luma, chroma)`, `[8, 8]` int32 each.
      summary: the printed text.
      skipped: the images that could not be measured.
    """

    sensitivity: BandSensitivity
    qtables: tuple[np.ndarray, np.ndarray]
    summary: str
    skipped: list[rundir.SkippedImage]


def check_config(config: Config) -> None:
    """Refuses settings `run` cannot use, before any image or model is read.

    Raises:
      ValueError: one line naming the bad setting.
    """
    config.model.check()
    config.data.check()
    if config.per_class is not None:
        checks.integer("per_class", config.per_class, 1, note="None: all")
    checks.integer("shard_size", config.shard_size, 1)
    band_sensitivity.check_settings(
        **{k: getattr(config, k) for k in _COMPUTE_SETTINGS}
    )


def _measure(
    classifier: registry.Classifier,
    source: datasets.Source,
    config: Config,
    run_dir: rundir.RunDir,
    verbose: bool,
) -> tuple[BandSensitivity, list[rundir.SkippedImage]]:
    """Sensitivities of the chosen images, one resumable shard at a time."""

    def work(example):  # Eager re-run of one example, for `diagnose`.
        image = candidates.decode_image(example["image_bytes"])
        return dct_pixels.rgb_to_coefficients(image, config.chroma_subsampling)

    def compute(dataset, report):
        return band_sensitivity.compute_with_indices(
            classifier,
            dataset,
            **{k: getattr(config, k) for k in _COMPUTE_SETTINGS},
            ignore_errors=True,
            progress=report,
        )

    return image_sums.accumulate(
        run_dir,
        _SHARD_NAME,
        "band sensitivities",
        source,
        image_sums.chosen_indices(source, config.per_class, config.seed),
        config.shard_size,
        compute,
        work,
        BandSensitivity.empty(config.chroma_subsampling, config.loss),
        require_label=config.loss == "xent",
        verbose=verbose,
    )


def _summary(
    sens: BandSensitivity, luma: np.ndarray, chroma: np.ndarray, config: Config
) -> str:
    """log10 s_k and the tables, each next to what it compares with."""
    jpeg = tables.standard_qtables(50)
    with np.errstate(divide="ignore"):
        logs = [np.log10(sens.mean(c)) for c in ("luma", "chroma")]

    def pair(title: str, left: str, right: str) -> str:
        rows = zip(left.splitlines(), right.splitlines(), strict=True)
        return title + "\n" + "\n".join(f"{a}   |{b}" for a, b in rows)

    grids = [tables.format_qtable(g, "{:6.2f}") for g in logs]
    return "\n\n".join(
        [
            f"Sensitivity tables ({config.loss}, {sens.chroma_subsampling}) "
            f"of {config.model.name} from {sens.num_images} images of "
            f"{config.data.name}",
            pair("log10 s_k, luma | chroma:", *grids),
            pair(
                "luma table | JPEG luma table, QF 50:",
                tables.format_qtable(luma),
                tables.format_qtable(jpeg[0]),
            ),
            pair(
                "chroma table | JPEG chroma table, QF 50:",
                tables.format_qtable(chroma),
                tables.format_qtable(jpeg[1]),
            ),
        ]
    )


def _write_tables(
    run_dir: rundir.RunDir,
    luma: np.ndarray,
    chroma: np.ndarray,
    sens: BandSensitivity,
    config: Config,
) -> None:
    """`qtables_sensitivity.json` and `.txt` (`cjpeg -qtables`)."""
    metadata = {
        "rule": "step ~ s^-1/2, luma geometric mean of Annex K's",
        "model": config.model.name,
        "num_images": sens.num_images,
        "data": config.data.name,
        "split": config.data.split,
        "split_seed": config.data.split_seed,
        **{k: getattr(config, k) for k in _COMPUTE_SETTINGS},
    }
    comment = (
        f"Sensitivity tables ({config.loss}) of {config.model.name} from "
        f"{sens.num_images} images of {config.data.name}"
    )
    tableset_files.write_tableset(
        run_dir,
        TABLES_NAME,
        luma,
        chroma,
        comment,
        metadata,
        subsampling=sens.chroma_subsampling,
    )


def run(
    config: Config,
    workdir: str,
    resume: bool = False,
    verbose: bool = True,
    given: job.Given | None = None,
) -> Result:
    """Measures the sensitivities and writes the tables to `workdir`.

    Writes `config.json`, `sensitivity.npz` (`BandSensitivity.save`),
    `qtables_sensitivity.json` and `.txt`, `summary.txt` and
    `errors.jsonl` (images skipped), each atomically; the partial sums of
    each shard of images are kept in `<workdir>/shards/` for `resume`.

    Args:
      config: what to compute.
      workdir: output directory (see `rundir.RunDir.open`).
      resume: continue an interrupted run in `workdir` (same config, data
        and model files).
      verbose: show a progress bar.
      given: the images and classifier of a calling job (`job.Given`).

    Returns:
      The sensitivities, tables, summary text and skipped images.

    Raises:
      ValueError: bad settings (before the model loads); a workdir that is
        not this job's, in use, or (resume) of other settings or data; no
        image could be measured.
      FileNotFoundError: no such image folder.
    """
    with job.open_job(
        JOB, config, workdir, check_config, resume, given=given
    ) as opened:
        config, source, run_dir = opened.config, opened.source, opened.run
        sens, skipped = _measure(
            opened.classifier(), source, config, run_dir, verbose
        )
        run_dir.write_errors(skipped)
        if not sens.num_images:
            raise ValueError(f"{source.description}: no image was measured")
        sens.save(run_dir.path(SENSITIVITY_FILE))
        luma, chroma = qtables(sens)
        _write_tables(run_dir, luma, chroma, sens, config)
        summary = _summary(sens, luma, chroma, config)
        if skipped:
            errors = os.path.join(run_dir.root, rundir.ERRORS_FILE)
            summary += f"\n\n{len(skipped)} images skipped (see {errors})"
        run_dir.write_text(SUMMARY_FILE, summary + "\n")
    return Result(sens, (luma, chroma), summary, skipped)
