"""Cross-fitted verdict: DNN-oriented JPEG tables against standard JPEG.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

Not in the paper. Every table design here learns from images: the PLM from
their DCT statistics (`design`), the sensitivity tables from the model's
gradients (`sensitivity`), the fitted tables from a search against the model
(`fit`). A table judged on images it was made from flatters itself, and a
fixed half split leaves few images for either side. So (SPEC.md
"Cross-fitting"; the verdict: "Verdict: band gain with a paired bootstrap"):

1. the images are split into K seeded folds (`splits.fold_mask`);
2. for each fold k, every design sees only the other K-1 folds
   (`split="fit:<k>/<K>"`; the sensitivities and the search a seeded sample
   of `fit_images` of them), and `rate_accuracy` evaluates its tables,
   with standard JPEG on the same grid, on fold k alone
   (`split="heldout:<k>/<K>"`);
3. the K held-out predictions are pooled, so every image is evaluated once,
   by tables that never saw it, and the band gains and their paired
   bootstrap intervals (`comparison`, `bootstrap`) are computed over all N
   images.

Each step is its own job in `<workdir>/fold<k>/<step>` (design, sensitivity,
fit, eval), so `resume` continues from the last finished step and shard.
"""

from __future__ import annotations

import dataclasses
import os

from compression_helps.core import checks, files, rundir
from compression_helps.engine import candidates, evaluate, job, ranking
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.analysis import bootstrap, comparison
from deepn_jpeg.jobs import methods, rate_accuracy, report
from deepn_jpeg.jpeg import codec

__all__ = [
    "JOB",
    "PLOT_FILE",
    "RESULT_FILE",
    "Config",
    "check_config",
    "run",
]

JOB = "crossfit_deepn_jpeg"
RESULT_FILE = "crossfit.json"
PLOT_FILE = "crossfit.png"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` does; the flags of crossfit_deepn_jpeg.py mirror it.

    Attributes:
      model: the classifier.
      data: all the images (split "all"); the folds are seeded by
        `split_seed`.
      folds: K; each fold is evaluated by tables made from the other K-1.
      methods: table designs, from `METHODS`.
      encoders: every curve, standard JPEG included, is written by each
        (`codec.ENCODERS`); the reference is standard JPEG with libjpeg.
      qualities: the rate grid of every curve (IJG-style scales).
      subsampling: chroma subsampling of every file.
      fit_images: the sensitivities and the table search use a seeded
        sample of at most this many of the K-1 design folds' images.
      fit_quality: the search's byte budget: standard JPEG at this QF.
      fit_trials: trials per searched family and fold.
      batch_size: images per model call of the sensitivities and the
        search.
      eval_batch_size: images per evaluation step; each brings all its
        candidates (1 + curves x qualities) to one model call, so this is
        small.
      shard_size: images per results shard (the unit of resuming).
      bootstrap: paired bootstrap resamples of the pooled images.
      band_drops: the verdict's top-1 band, below the original's top-1.
      gain_drops: gains at single targets, the original's top-1 minus these.
    """

    model: registry.ModelConfig = registry.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    folds: int = 2
    methods: tuple[str, ...] = methods.METHODS
    encoders: tuple[str, ...] = codec.ENCODERS
    qualities: tuple[int, ...] = (95, 85, 75, 65, 55, 45, 35, 25, 15)
    subsampling: str = "4:2:0"
    fit_images: int = 250
    fit_quality: int = 50
    fit_trials: int = 20
    batch_size: int = 32
    eval_batch_size: int = 4
    shard_size: int = evaluate.SHARD_SIZE
    bootstrap: int = 1000
    band_drops: tuple[float, float] = comparison.BAND_DROPS
    gain_drops: tuple[float, ...] = comparison.GAIN_DROPS


def check_config(config: Config) -> None:
    """Refuses settings `run` cannot use, before any image or model is read.

    Raises:
      ValueError: one line naming the bad setting.
    """
    config.model.check()
    config.data.check()
    if config.data.split != "all":
        raise ValueError(
            f"split must be 'all' (the folds split the images), got "
            f"{config.data.split!r}"
        )
    checks.integer("folds", config.folds, 2)
    methods.check(config)
    checks.choices_of(
        "encoders", config.encoders, codec.ENCODERS, item="encoder"
    )
    candidates.validate_qualities(config.qualities)
    checks.integer("shard_size", config.shard_size, 1)
    checks.integer("eval_batch_size", config.eval_batch_size, 1)
    checks.integer("bootstrap", config.bootstrap, 0, note="0: no intervals")


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Designs, evaluates and pools every fold; prints and writes the verdict.

    Writes `<workdir>/config.json`, `fold<k>/{design,sensitivity,fit,eval}`
    (each a job's folder), the pooled `predictions.npz`, `errors.jsonl`,
    `crossfit.json` and `crossfit.png`; these four after every fold, for the
    folds done so far (`folds_done`).

    Args:
      config: what to evaluate.
      workdir: output directory (see `rundir.RunDir.open`).
      resume: continue an interrupted run: same settings, data and model.
      verbose: progress bars and printed tables.

    Returns:
      The result, as written to `crossfit.json`.

    Raises:
      ValueError: bad settings, or a workdir that cannot be resumed.
    """
    with job.open_job(
        JOB,
        config,
        workdir,
        check_config,
        resume,
        # How many images per evaluation step changes only the speed and the
        # memory; an evaluation never mixes two (its own run refuses it).
        # The report's settings apply to the pooled predictions only.
        may_change=("eval_batch_size", *bootstrap.REPORT_SETTINGS),
        settings=lambda c, _: dataclasses.replace(
            c,
            methods=tuple(c.methods),
            encoders=tuple(c.encoders),
            qualities=tuple(int(q) for q in c.qualities),
            band_drops=tuple(c.band_drops),
            gain_drops=tuple(c.gain_drops),
        ),
    ) as opened:
        config, run_dir = opened.config, opened.run
        # The images and the model, opened once for every fold's jobs.
        opened.classifier()
        given = opened.handing_down()
        parts, skipped, folds = [], [], []
        for fold in range(1, config.folds + 1):
            root = run_dir.path(f"fold{fold}")
            part = f"{fold}/{config.folds}"
            made = methods.make_tables(
                config,
                dataclasses.replace(config.data, split=f"fit:{part}"),
                root,
                resume,
                verbose,
                given,
            )
            evaluated = rate_accuracy.run(
                rate_accuracy.Config(
                    tables=tuple(m.path for m in made.values()),
                    model=config.model,
                    data=dataclasses.replace(
                        config.data, split=f"heldout:{part}"
                    ),
                    batch_size=config.eval_batch_size,
                    qualities=config.qualities,
                    subsampling=config.subsampling,
                    encoders=config.encoders,
                    shard_size=config.shard_size,
                    bootstrap=0,
                ),
                os.path.join(root, "eval"),
                resume=resume,
                verbose=verbose,
                given=given,
            )
            parts.append(evaluated.predictions)
            skipped += evaluated.skipped
            folds.append(
                {
                    "fold": fold,
                    "n_images": evaluated.predictions.num_images,
                    "tables": evaluated.report["tables"],
                }
            )
            # After every fold: the verdict so far, so a long run stopped
            # early still leaves the folds it finished.
            result = _write_result(
                run_dir, config, opened.source, parts, skipped, folds
            )
    if verbose:
        print(
            f"\n{config.model.name}: {result['n_images']} images in "
            f"{config.folds} folds, each evaluated by tables made without it; "
            f"{len(skipped)} skipped\n"
        )
        print(report.rate_accuracy_text(result))
    return result


def _write_result(
    run_dir: rundir.RunDir,
    config: Config,
    source: datasets.Source,
    parts: list[ranking.Predictions],
    skipped: list[rundir.SkippedImage],
    folds: list[dict],
) -> dict:
    """Pools the folds evaluated so far; writes the predictions and verdict."""
    pooled = ranking.Predictions.concatenate(parts)
    run_dir.write_npz(ranking.PREDICTIONS_FILE, pooled.to_arrays())
    run_dir.write_errors(skipped)
    result = {
        "model": config.model.name,
        "images": source.description,
        "n_images": pooled.num_images,
        "n_errors": len(skipped),
        "folds_done": len(folds),
        "folds": folds,
        **bootstrap.summarize(
            pooled, config.gain_drops, config.band_drops, config.bootstrap
        ),
    }
    run_dir.write_json(RESULT_FILE, result)
    with files.atomic_path(run_dir.path(PLOT_FILE)) as tmp_path:
        report.plot_rate_accuracy(result, tmp_path)
    return result
