"""The main job: evaluate all candidates, then report every selector.

`experiments/run_selectors.py` is its command line. Several models are
evaluated in one pass (`evaluate.predict_models`: one JPEG stage, each
model its own crop, resize and normalisation). The run folder holds
`config.json`, `errors.jsonl` (images skipped, the same for every model),
the side-by-side `summary.md` and `summary.csv`, and one folder per model
(`model_folder`) with its `predictions.npz` and report (`report.json`,
`report.csv`, `accuracy_vs_cr.png`), also for a single model.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import keras

from compression_helps.core import checks, rundir
from compression_helps.engine import (
    candidate_store,
    candidates,
    evaluate,
    job,
    ranking,
)
from compression_helps.models import registry
from compression_helps.selection import report
from compression_helps.sources import datasets

__all__ = [
    "JOB",
    "Config",
    "check_config",
    "model_configs",
    "model_folder",
    "model_names",
    "rebuild_report",
    "run",
]

JOB = "run_selectors"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` evaluates; the flags of run_selectors.py mirror it.

    Attributes:
      model: the classifier; `model.name` may list several, comma-separated
        (`--model=a,b`), evaluated in one pass, with the same other model
        settings.
      data: the images.
      batch_size: images per model call (the model sees batch_size * V).
      qualities: JPEG QFs of candidates 1..V-1.
      shard_size: images per results shard (the unit of resuming).
      data_service: tf.data service dispatcher address (`grpc://host:port`)
        whose workers do the JPEG work; None: this process does it.
      jit_compile: compile the model step with XLA (GPU/TPU).
      mixed_precision: Keras dtype policy for the model, e.g.
        "mixed_float16" (GPU) or "mixed_bfloat16" (TPU); None: float32.
      candidates: a candidate store folder (`candidate_store`): the JPEG
        files are encoded once, written there, and read back by every later
        run of the same images and QFs; None: encode in every run.
    """

    model: registry.ModelConfig = registry.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    batch_size: int = 8
    qualities: tuple[int, ...] = candidates.QUALITIES
    shard_size: int = evaluate.SHARD_SIZE
    data_service: str | None = None
    jit_compile: bool = False
    mixed_precision: str | None = None
    candidates: str | None = None


# Where the work runs, not what it computes: a resumed run may change them.
# The candidate store gives the same files as encoding does.
RESUMABLE_CHANGES = ("data_service", "jit_compile", "candidates")


def model_names(listed: str) -> list[str]:
    """The models of a `--model` value: names or files, comma-separated.

    Args:
      listed: e.g. "efficientnet_lite0,resnet50v2".

    Returns:
      The names, in order.

    Raises:
      ValueError: an empty name in the list.
    """
    names = [name.strip() for name in listed.split(",")]
    if "" in names:
        raise ValueError(f"model: empty name in the list {listed!r}")
    return names


def model_configs(config: Config) -> tuple[registry.ModelConfig, ...]:
    """The models `config.model.name` lists (`model_names`), in order.

    Args:
      config: the settings.

    Returns:
      One `registry.ModelConfig` per name, each with the other model
      settings of `config.model`.
    """
    return tuple(
        dataclasses.replace(config.model, name=name)
        for name in model_names(config.model.name)
    )


def model_folder(name: str) -> str:
    """The folder of a model's results in the workdir.

    Args:
      name: a registry name or a model file.

    Returns:
      The registry name, or the file's name without its extension.
    """
    if name in registry.REGISTRY:
        return name
    return os.path.splitext(os.path.basename(name))[0]


def check_config(config: Config) -> tuple[int, ...]:
    """Refuses settings `run` cannot use, before any image or model is read.

    Args:
      config: the settings.

    Returns:
      The qualities, checked.

    Raises:
      ValueError: one line naming the bad setting; also when nothing
        answers at `data_service`.
    """
    model_list = model_configs(config)
    for model in model_list:
        model.check()
    folders = [model_folder(m.name) for m in model_list]
    repeated = sorted({f for f in folders if folders.count(f) > 1})
    if repeated:
        raise ValueError(
            f"model: two models would write to the folder {repeated[0]}/ of "
            "the workdir; list each model once (rename model files)"
        )
    if len(model_list) > 1 and config.model.weights not in (None, "imagenet"):
        raise ValueError(
            f"weights: one weights file ({config.model.weights}) cannot be "
            "the weights of several models; run them one by one"
        )
    config.data.check()
    qualities = candidates.validate_qualities(config.qualities)
    checks.integer("batch_size", config.batch_size, 1)
    checks.integer("shard_size", config.shard_size, 1)
    if config.mixed_precision:
        try:
            keras.mixed_precision.DTypePolicy(config.mixed_precision)
        except ValueError as e:
            raise ValueError(f"mixed_precision: {e}") from None
    checks.data_service(config.data_service)
    return qualities


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict[str, dict]:
    """Evaluates, writes predictions.npz and the reports, prints the table.

    Writes `<workdir>/config.json`, `errors.jsonl` (one line per skipped
    image: id, path, reason), the summary files and, per model,
    `<workdir>/<model_folder>/predictions.npz` and its report files.

    Args:
      config: what to evaluate.
      workdir: output directory (created; see `rundir.RunDir.open`).
      resume: continue an interrupted run in `workdir` (same config, data).
      verbose: progress bar and printed table.

    Returns:
      Each model's report dict (see `report.write_report`) by model folder,
      in the order of `config.model.name`.
    """
    model_list = model_configs(config)
    store = None
    with job.open_job(
        JOB,
        config,
        workdir,
        check_config,
        resume,
        models=model_list,
        may_change=RESUMABLE_CHANGES,
        settings=lambda c, qualities: dataclasses.replace(
            c, qualities=qualities
        ),
    ) as opened:
        config, source, run_dir = opened.config, opened.source, opened.run
        codecs = candidates.as_codecs(config.qualities)
        if config.candidates:
            key = candidate_store.store_key(codecs, config.data, source)
            store = candidate_store.Store.open(
                config.candidates, key, source.count()
            )
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy(config.mixed_precision)
        classifiers = [opened.classifier(m) for m in model_list]
        if store is not None:
            store.fill(source, codecs, verbose)
        predictions, skipped = evaluate.predict_models(
            classifiers,
            source,
            codecs,
            config.batch_size,
            run=run_dir,
            shard_size=config.shard_size,
            data_service=config.data_service,
            jit_compile=config.jit_compile,
            verbose=verbose,
            store=store,
        )
        for model, result in zip(model_list, predictions, strict=True):
            run_dir.write_npz(
                os.path.join(
                    model_folder(model.name), ranking.PREDICTIONS_FILE
                ),
                result.to_arrays(),
            )
        run_dir.write_errors(skipped)
        names = [c.name for c in classifiers]
        return _report(
            dict(zip(names, predictions, strict=True)),
            run_dir,
            skipped,
            verbose,
        )


def rebuild_report(workdir: str, verbose: bool = True) -> dict[str, dict]:
    """Rebuilds the reports from each model's predictions.npz, no model run.

    Args:
      workdir: a directory written by `run`.
      verbose: print the table.

    Returns:
      Each model's report dict, as `run` returns them.

    Raises:
      FileNotFoundError: a model's predictions.npz is missing.
      ValueError: a damaged or foreign workdir, or one in use.
    """
    with rundir.RunDir.reopen(workdir, JOB) as run_dir:
        predictions = {}
        for name in model_names(run_dir.config["settings"]["model"]["name"]):
            path = os.path.join(
                workdir, model_folder(name), ranking.PREDICTIONS_FILE
            )
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no predictions to report")
            predictions[name] = ranking.Predictions.load(path)
        return _report(
            predictions, run_dir, rundir.read_errors(workdir), verbose
        )


def _report(
    predictions: dict[str, ranking.Predictions],
    run_dir: rundir.RunDir,
    skipped: Sequence[rundir.SkippedImage],
    verbose: bool,
) -> dict[str, dict]:
    """Writes each model's report and the summary; prints the table."""
    errors_by_reason = rundir.count_kinds(skipped)
    errors_path = os.path.join(run_dir.root, rundir.ERRORS_FILE)
    results = {
        model_folder(name): report.write_report(
            p, run_dir, name, errors_by_reason, model_folder(name)
        )
        for name, p in predictions.items()
    }
    report.write_summary(run_dir, results)
    if verbose:
        first = next(iter(results.values()))
        skipped = ", ".join(f"{n} {k}" for k, n in errors_by_reason.items())
        print(
            f"\n{', '.join(predictions)}: {first['n_images']} images "
            f"evaluated, {first['n_errors']} skipped"
            + (f" ({skipped}; see {errors_path})" if skipped else "")
            + "\n"
        )
        if len(results) == 1:
            print(report.to_markdown(first["rows"]))
        else:
            print(report.summary_markdown(results))
        print()
        for folder in results:
            path = os.path.join(run_dir.root, folder, report.REPORT_FILE)
            print(f"report: {path}")
        print(f"summary: {os.path.join(run_dir.root, report.SUMMARY_CSV)}")
    return results
