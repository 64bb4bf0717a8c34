"""The main job: evaluate all candidates, then report every selector.

`experiments/run_selectors.py` is its command line.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from compression_helps import (
    candidates,
    checks,
    datasets,
    evaluate,
    models,
    report,
    rundir,
)

__all__ = ["JOB", "Config", "check_config", "rebuild_report", "run"]

JOB = "run_selectors"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` evaluates; the flags of run_selectors.py mirror it.

    Attributes:
      model: the classifier.
      data: the images.
      batch_size: images per model call (the model sees batch_size * V).
      qualities: JPEG QFs of candidates 1..V-1.
      shard_size: images per results shard (the unit of resuming).
      data_service: tf.data service dispatcher address (`grpc://host:port`)
        whose workers do the JPEG work; None: this process does it.
      jit_compile: compile the model step with XLA (GPU/TPU).
      mixed_precision: Keras dtype policy for the model, e.g.
        "mixed_float16" (GPU) or "mixed_bfloat16" (TPU); None: float32.
    """

    model: models.ModelConfig = models.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    batch_size: int = 8
    qualities: tuple[int, ...] = candidates.QUALITIES
    shard_size: int = evaluate.SHARD_SIZE
    data_service: str | None = None
    jit_compile: bool = False
    mixed_precision: str | None = None


# Where the work runs, not what it computes: a resumed run may change them.
RESUMABLE_CHANGES = ("data_service", "jit_compile")


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
    config.model.check()
    checks.data(config.data)
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
) -> dict:
    """Evaluates, writes predictions.npz and the report, prints the table.

    Writes `<workdir>/config.json`, `predictions.npz`, `errors.jsonl` (one
    line per skipped image: id, path, reason) and the report files.

    Args:
      config: what to evaluate.
      workdir: output directory (created; see `rundir.RunDir.open`).
      resume: continue an interrupted run in `workdir` (same config, data).
      verbose: progress bar and printed table.

    Returns:
      The report dict (see `report.write_report`).
    """
    qualities = check_config(config)
    data = config.data.resolved()
    source = data.load()
    config = dataclasses.replace(config, data=data, qualities=qualities)
    with rundir.RunDir.open(
        workdir,
        JOB,
        config,
        resume,
        data=source.fingerprint,
        inputs=config.model.input_files(),
        may_change=RESUMABLE_CHANGES,
    ) as run_dir:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy(config.mixed_precision)
        classifier = config.model.load()
        predictions, skipped = evaluate.predict(
            classifier,
            source,
            qualities,
            config.batch_size,
            run=run_dir,
            shard_size=config.shard_size,
            data_service=config.data_service,
            jit_compile=config.jit_compile,
            verbose=verbose,
        )
        run_dir.write_npz(evaluate.PREDICTIONS_FILE, predictions.to_arrays())
        run_dir.write_errors(skipped)
        return _report(predictions, run_dir, classifier.name, verbose)


def rebuild_report(workdir: str, verbose: bool = True) -> dict:
    """Rebuilds the report from `<workdir>/predictions.npz`, no model run.

    Args:
      workdir: a directory written by `run`.
      verbose: print the table.

    Returns:
      The report dict.

    Raises:
      FileNotFoundError: no predictions.npz in `workdir`.
      ValueError: a damaged or foreign workdir, or one in use.
    """
    with rundir.RunDir.reopen(workdir, JOB) as run_dir:
        path = os.path.join(workdir, evaluate.PREDICTIONS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no predictions to report")
        predictions = evaluate.Predictions.load(path)
        model = run_dir.config["settings"]["model"]["name"]
        return _report(predictions, run_dir, model, verbose)


def _report(
    predictions: evaluate.Predictions,
    run_dir: rundir.RunDir,
    model: str,
    verbose: bool,
) -> dict:
    errors_by_reason = rundir.count_errors(run_dir.root)
    errors_path = os.path.join(run_dir.root, rundir.ERRORS_FILE)
    result = report.write_report(predictions, run_dir, model, errors_by_reason)
    if verbose:
        skipped = ", ".join(f"{n} {k}" for k, n in errors_by_reason.items())
        print(
            f"\n{model}: {result['n_images']} images evaluated, "
            f"{result['n_errors']} skipped"
            + (f" ({skipped}; see {errors_path})" if skipped else "")
            + "\n"
        )
        print(report.to_markdown(result["rows"]))
        print(f"\nreport: {os.path.join(run_dir.root, 'report.json')}")
    return result
