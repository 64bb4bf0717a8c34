"""The main job: evaluate all candidates, then report every selector.

`experiments/run_selectors.py` is its command line.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras

from compression_helps import candidates, datasets, evaluate, models, report
from compression_helps import workdir as workdir_lib

__all__ = ["Config", "rebuild_report", "run"]


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` evaluates; the flags of run_selectors.py mirror it.

    Attributes:
      model: registry name or Keras model file.
      weights: "imagenet", a weights file, or None for random weights.
      data: folder or `tfds:<name>[:<split>]`; empty: the ImageNet sample
        images (downloaded once).
      batch_size: images per model call (the model sees batch_size * V).
      limit: evaluate only the first `limit` images.
      qualities: JPEG QFs of candidates 1..V-1.
      image_size: model input side; None for the model's own.
      tfds_data_dir: TFDS data directory.
      shard_size: images per results shard (the unit of resuming).
      data_service: tf.data service dispatcher address (`grpc://host:port`)
        whose workers do the JPEG work; None: this process does it.
      jit_compile: compile the model step with XLA (GPU/TPU).
      mixed_precision: Keras dtype policy for the model, e.g.
        "mixed_float16" (GPU) or "mixed_bfloat16" (TPU); None: float32.
    """

    model: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    data: str = ""
    batch_size: int = 8
    limit: int | None = None
    qualities: tuple[int, ...] = candidates.QUALITIES
    image_size: int | None = None
    tfds_data_dir: str | None = None
    shard_size: int = evaluate.SHARD_SIZE
    data_service: str | None = None
    jit_compile: bool = False
    mixed_precision: str | None = None


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Evaluates, writes predictions.npz and the report, prints the table.

    Writes `<workdir>/config.json`, `predictions.npz`, `errors.jsonl` (one
    line per skipped image: id, path, reason) and the report files.

    Args:
      config: what to evaluate.
      workdir: output directory (created).
      resume: continue an interrupted run in `workdir` (same config).
      verbose: progress bar and printed table.

    Returns:
      The report dict (see `report.write_report`).
    """
    qualities = candidates.validate_qualities(config.qualities)
    workdir_lib.prepare(workdir)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(config.mixed_precision)
    classifier = models.load_classifier(
        config.model, config.weights, config.image_size
    )
    data = config.data or datasets.sample_images_dir()
    source = datasets.load(data, config.limit, config.tfds_data_dir)
    resolved = dataclasses.replace(
        config, data=data, qualities=qualities, image_size=classifier.image_size
    )
    workdir_lib.write_config(workdir, resolved, resume)
    predictions, skipped = evaluate.predict(
        classifier,
        source,
        qualities,
        config.batch_size,
        workdir=workdir,
        resume=resume,
        shard_size=config.shard_size,
        data_service=config.data_service,
        jit_compile=config.jit_compile,
        verbose=verbose,
    )
    predictions.save(os.path.join(workdir, evaluate.PREDICTIONS_FILE))
    workdir_lib.write_errors(workdir, skipped)
    return _report(predictions, workdir, classifier.name, verbose)


def rebuild_report(workdir: str, verbose: bool = True) -> dict:
    """Rebuilds the report from `<workdir>/predictions.npz`, no model run.

    Args:
      workdir: a directory written by `run`.
      verbose: print the table.

    Returns:
      The report dict.

    Raises:
      FileNotFoundError: no predictions.npz in `workdir`.
    """
    path = os.path.join(workdir, evaluate.PREDICTIONS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no predictions to report")
    with open(os.path.join(workdir, "config.json")) as f:
        model_name = json.load(f)["model"]
    predictions = evaluate.Predictions.load(path)
    return _report(predictions, workdir, model_name, verbose)


def _report(
    predictions: evaluate.Predictions, workdir: str, model: str, verbose: bool
) -> dict:
    errors_by_reason = workdir_lib.count_errors(workdir)
    errors_path = os.path.join(workdir, workdir_lib.ERRORS_FILE)
    result = report.write_report(predictions, workdir, model, errors_by_reason)
    if verbose:
        skipped = ", ".join(f"{n} {k}" for k, n in errors_by_reason.items())
        print(
            f"\n{model}: {result['n_images']} images evaluated, "
            f"{result['n_errors']} skipped"
            + (f" ({skipped}; see {errors_path})" if skipped else "")
            + "\n"
        )
        print(report.to_markdown(result["rows"]))
        print(f"\nreport: {os.path.join(workdir, 'report.json')}")
    return result
