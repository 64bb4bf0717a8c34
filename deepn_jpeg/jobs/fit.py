"""Tables fitted to a model at byte budgets (SPEC.md, "DNN-oriented tables").

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
- Each family (`deepn_jpeg.families`) is searched at each budget
  (`deepn_jpeg.search`): every trial's tables are scaled to just within
  the budget, so every trial is compared at equal bytes, and the best
  trial by top-1 and the true label's mean probability wins (the unfitted
  start on ties).

Images are evaluated by `in_memory.InMemoryImages` and trials scored by
`ranking.accuracy`, so a table scores here what `rate_accuracy` reports
on the same images. Every trial is appended to `trials.jsonl`; `resume`
replays it (the optimiser asks for the same trials in the same order) and
goes on. The fitted tables are written as `qtables_fit-<family>-qf<Q>`
`.json` and `.txt` (`cjpeg -qtables`; `tableset_files.write_tableset`)
for `rate_accuracy` to evaluate on the "heldout" half.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from compression_helps.core import checks, progress, rundir
from compression_helps.engine import candidates, in_memory, job
from compression_helps.models import registry
from compression_helps.sources import datasets, splits
from deepn_jpeg.analysis import families, search, statistics
from deepn_jpeg.jobs import report
from deepn_jpeg.jpeg import codec, ladder, tables, tableset_files

__all__ = [
    "JOB",
    "SUMMARY_FILE",
    "TRIALS_FILE",
    "Config",
    "check_config",
    "run",
    "smoke",
]

JOB = "fit_qtable"
TRIALS_FILE = "trials.jsonl"
SUMMARY_FILE = "fit_summary.json"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` fits; the flags of fit_qtable.py mirror it.

    Attributes:
      model: the classifier the tables are fitted to.
      data: the images; the search sees only a "fit" part of the split:
        "fit" (the half that eval_deepn_jpeg.py --split=heldout leaves out)
        or "fit:<k>/<K>" (cross-fitting).
      families: table families to fit, from `families.FAMILIES`.
      sensitivity_tables: the "sensitivity" family's start: a
        measure_sensitivity.py workdir (its qtables_sensitivity.json) or a
        tables JSON file, measured on the same fit images.
      budget_qualities: one byte budget per QF: the total bytes of standard
        JPEG at that QF on the fit images. The defaults lie 1-5 top-1
        points below the original files for efficientnet_lite0 on the fit
        half of the sample images.
      max_trials: parameter vectors tried per family and budget.
      tie_weight: `search.score` = top-1 + tie_weight * mean true-label
        probability.
      budget_tolerance: a table pair is accepted with bytes in
        [(1 - budget_tolerance) * budget, budget].
      subsampling: chroma subsampling of every file.
      batch_size: images per model call.
      seed: global random seed.
    """

    model: registry.ModelConfig = registry.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig(split="fit")
    families: tuple[str, ...] = ("plm", "standard")
    sensitivity_tables: str = ""
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


def _fit_budget(
    quality: int,
    images: in_memory.InMemoryImages,
    starts: dict[str, Any],
    log: rundir.JsonlCache,
    run_dir: rundir.RunDir,
    config: Config,
) -> dict:
    """Standard JPEG at QF `quality`, and each family fitted to its bytes."""
    luma, chroma = tables.standard_qtables(quality)
    jpeg_codec = ladder.table_codec(
        candidates.JPEG, quality, luma, chroma, config.subsampling
    )
    jpeg = log.get_or_compute(
        f"jpeg|{quality}", lambda: search.measure(images, [jpeg_codec])
    )
    budget = {"quality": quality, "jpeg": jpeg, "fitted": []}
    for name in config.families:
        family = families.make_family(name, **starts)
        best, trials = search.search(
            family,
            quality,
            jpeg["bytes"],
            images,
            log,
            subsampling=config.subsampling,
            budget_tolerance=config.budget_tolerance,
            max_trials=config.max_trials,
            tie_weight=config.tie_weight,
        )
        table_name = f"fit-{name}-qf{quality}"
        comment = (
            f"{name} tables fitted to {config.model.name} at the bytes of "
            f"standard JPEG QF {quality} on {images.description}: top-1 "
            f"{best['top1']:.2f} % (JPEG {jpeg['top1']:.2f} %)"
        )
        keys = ("family", "params", "scale", "budget_quality")
        keys += ("budget_bytes", "bytes", "top1", "top5", "mean_prob", "trial")
        tableset_files.write_tableset(
            run_dir,
            table_name,
            best["luma"],
            best["chroma"],
            comment,
            {k: best[k] for k in keys},
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
    return budget


def check_config(config: Config) -> None:
    """Refuses settings `run` cannot use, before any image or model is read.

    Args:
      config: the settings.

    Raises:
      ValueError: one line naming the bad setting.
    """
    config.model.check()
    config.data.check()
    if not config.families:
        raise ValueError("no table family to fit")
    for name in config.families:
        checks.one_of("family", name, families.FAMILIES)
    if ("sensitivity" in config.families) != bool(config.sensitivity_tables):
        raise ValueError(
            "the sensitivity family needs --sensitivity_tables, and "
            "--sensitivity_tables needs the sensitivity family"
        )
    if (splits.check_part(config.data.split) or ("fit",))[0] != "fit":
        raise ValueError(
            f"split must be a fit part (fit or fit:<k>/<K>), got "
            f"{config.data.split!r}: the search never sees held-out images"
        )
    candidates.validate_qualities(config.budget_qualities)
    codec.check_subsampling(config.subsampling)
    checks.integer("max_trials", config.max_trials, 1)
    checks.integer("batch_size", config.batch_size, 1)
    checks.integer("seed", config.seed)
    checks.number(
        "budget_tolerance", config.budget_tolerance, 0, 1, open_interval=True
    )
    checks.number("tie_weight", config.tie_weight, 0)


def _sensitivity_files(config: Config) -> list[str]:
    """The one sensitivity tables file the "sensitivity" family starts from."""
    if not config.sensitivity_tables:
        return []
    found = tableset_files.tables_files(config.sensitivity_tables)
    if len(found) != 1:
        raise ValueError(
            f"{config.sensitivity_tables}: expected one table set, found "
            f"{sorted(found)}"
        )
    return list(found.values())


def run(
    config: Config,
    workdir: str,
    resume: bool = False,
    verbose: bool = True,
    given: job.Given | None = None,
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
      given: the images and classifier of a calling job (`job.Given`).

    Returns:
      The summary: original files, and per budget standard JPEG and each
      family's start and best trials, on the fit images.

    Raises:
      ValueError: bad settings (before the model loads), resuming with
        other settings, or a budget no table of a family meets.
    """
    # "all" (a data config's default) means the usual fit half.
    if config.data.split == "all":
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, split="fit")
        )
    sensitivity_files = _sensitivity_files(config)
    with job.open_job(
        JOB,
        config,
        workdir,
        check_config,
        resume,
        given=given,
        inputs=sensitivity_files,
        # More trials continue the same deterministic search: the log replays.
        may_change=("max_trials",),
        settings=lambda c, _: dataclasses.replace(
            c,
            families=tuple(c.families),
            budget_qualities=tuple(int(q) for q in c.budget_qualities),
        ),
    ) as opened:
        config, source, run_dir = opened.config, opened.source, opened.run
        keras.utils.set_random_seed(config.seed)
        # Only the "plm" family starts from the statistics: those of all the
        # fit images (design_qtable.py --split=fit --per_class=0's
        # "monotone" tables).
        starts = {}
        if "plm" in config.families:
            starts["stats"] = statistics.compute(
                source.dataset, ignore_errors=True
            )
        if sensitivity_files:
            starts["sensitivity_tables"] = tables.load_json(
                sensitivity_files[0]
            )
        images = in_memory.InMemoryImages(
            opened.classifier(), source, config.batch_size
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
                "original", lambda: search.measure(images, [])
            ),
            "budgets": [],
        }
        with shown:
            for quality in config.budget_qualities:
                summary["budgets"].append(
                    _fit_budget(quality, images, starts, log, run_dir, config)
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
