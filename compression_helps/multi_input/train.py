"""Trains and evaluates the multi-input model (SPEC.md, "Multi-input model").

Yang et al. 2021 train only the new softmax head over the concatenated pooled
features of the original and its JPEG versions; the backbone stays frozen.
Beside it, on the same batches, train the single-input control and the
mixing head (SPEC.md, "Multi-input model: heads and their control"; module
`heads`): the claim is a head's gain over the control, with a paired
bootstrap interval (`head_report`). By default the backbone runs once per
candidate image (`features.cache_features`) and the heads train on the
cached features. The cache holds N x V x F float32 values (about 4.5 GB for
50,000 images with Inception V3), so for the ImageNet training set use
`cache_features=False`: the full multi-input model then trains on the image
pipeline, as it also does with a trainable backbone.

The held-out images are a seeded split of `data` (`num_eval`), or a second
source (`eval_data`, e.g. ImageNet val when training on ImageNet train, the
paper's protocol).

`experiments/train_multi_input.py` is its command line. The workdir is a
`rundir.RunDir` of job `JOB`; it holds:

    config.json    the settings, the data's identity and the model files'
                   hashes (`resume` needs the same, except for
                   `RESUMABLE_CHANGES` such as more epochs)
    features.npz, eval_features.npz
                   cached [N, V, F] pooled features of the training and the
                   held-out images, labels, ids and the key they were
                   computed for (`features.features_key`)
    errors.jsonl   images without a label or that cannot be decoded
                   (cached features only)
    backup/        the training state after the last finished epoch:
                   `resume=True` continues from there
    logs/          TensorBoard scalars per epoch (logs/train,
                   logs/validation; `keras.callbacks.TensorBoard`)
    metrics.jsonl  one line of training metrics per epoch (`val_<head>_top1`:
                   held-out top-1 of each head)
    heldout_top1_per_epoch.png
                   that, plotted, with the backbone alone as a line
    model.keras    the full multi-input model with the head of the best
                   held-out top-1 (`exported_head` in results.json)
    results.json   top-1/top-5 (%) of the backbone alone and of every head on
                   the held-out images, over all classes and the classes
                   present; each head's gain over the single-input control
                   with its 90% paired bootstrap interval

Under `strategy="multi_worker"` only the chief writes; the workdir must be
on a file system all workers share, so that every worker resumes from the
chief's last epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import keras
import numpy as np
from absl import logging

from compression_helps.core import checks, files, rundir
from compression_helps.engine import candidates, job, ranking
from compression_helps.models import registry
from compression_helps.multi_input import (
    checkpoint,
    distribute,
    features,
    head_report,
    heads,
    network,
    trainers,
)
from compression_helps.sources import datasets, splits

__all__ = [
    "JOB",
    "MODEL_FILE",
    "OPTIMIZERS",
    "RESUMABLE_CHANGES",
    "RESULTS_FILE",
    "Config",
    "check_config",
    "make_optimizer",
    "read_config",
    "smoke_config",
    "train_and_evaluate",
]

JOB = "train_multi_input"
OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM = 0.9
TOP_K = ranking.TOP_K  # Top-5, as everywhere in the project.
# Settings a resumed run may change: more epochs, or where the work runs.
RESUMABLE_CHANGES = (
    "epochs",
    "strategy",
    "tpu",
    "num_cpu_devices",
    "data_service",
)
MODEL_FILE = "model.keras"
RESULTS_FILE = "results.json"
EVAL_FEATURES_FILE = "eval_features.npz"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `train_and_evaluate` trains; train_multi_input.py mirrors it.

    Attributes:
      model: the backbone.
      data: the training images; without `eval_data` split by image into
        training and held-out images (`num_eval`; the data's own `split` is
        applied first).
      eval_data: the held-out images from another source (a folder or
        `tfds:<name>[:<split>]`, read with `data`'s limit and pixel limit),
        e.g. ImageNet val when training on ImageNet train; None: hold out
        part of `data`.
      qualities: JPEG QFs of candidates 1..V-1.
      heads: the heads trained side by side on the same batches
        (`heads.HEADS`): the paper's multi-input head, the single-input
        control and the mixing head; a trainable backbone trains one.
      num_eval: held-out images; None: `eval_fraction` of them.
      eval_fraction: held-out fraction when `num_eval` is None.
      seed: seed of the split, the head's random init, shuffling and Keras.
      head_init: "backbone" (start at the backbone's predictions) or
        "random" (Glorot uniform); `network.HEAD_INITS`.
      train_backbone: fine-tune the backbone too (not in SPEC.md; implies
        no feature cache).
      cache_features: train the head on cached backbone features.
      optimizer: "adam" or "sgd" (with momentum `SGD_MOMENTUM`).
      learning_rate: optimizer learning rate.
      epochs: training epochs (raise it to train a finished run further).
      batch_size: images (or feature rows) per step, over all replicas.
      strategy: the `tf.distribute` strategy: "default", "mirrored",
        "tpu" or "multi_worker" (`distribute.STRATEGIES`).
      tpu: TPU name or address for `strategy="tpu"` ("" for the local one).
      num_cpu_devices: split the CPU into this many logical devices (for
        `mirrored` without GPUs, e.g. in tests); 0: leave as is.
      data_service: tf.data service dispatcher (`grpc://host:port`) whose
        workers do the JPEG work (feature caching and image training);
        None: this process does it.
    """

    model: registry.ModelConfig = registry.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    eval_data: str | None = None
    heads: tuple[str, ...] = heads.HEADS
    qualities: tuple[int, ...] = candidates.QUALITIES
    num_eval: int | None = None
    eval_fraction: float = 0.2
    seed: int = 0
    head_init: str = "backbone"
    train_backbone: bool = False
    cache_features: bool = True
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    epochs: int = 10
    batch_size: int = 32
    strategy: str = "default"
    tpu: str = ""
    num_cpu_devices: int = 0
    data_service: str | None = None


def smoke_config(config: Config) -> Config:
    """A seconds-long variant of `config` (the scripts' `--smoke`).

    Args:
      config: the settings to shrink; its data source is kept.

    Returns:
      Random-weight ResNet-50 V2 at 32x32, QF 90 and 10, 8 images (2 held
      out), one epoch.
    """
    return dataclasses.replace(
        config,
        model=registry.ModelConfig("resnet50v2", None, 32),
        data=dataclasses.replace(config.data, limit=config.data.limit or 8),
        qualities=(90, 10),
        num_eval=2,
        epochs=1,
        batch_size=4,
    )


def read_config(workdir: str) -> tuple[Config, dict]:
    """The config of a training run, from its `config.json`.

    Args:
      workdir: a `train_and_evaluate` workdir.

    Returns:
      `(config, record)`: the settings as a `Config`, and the whole record
      (with the data's identity and the input files' hashes).

    Raises:
      FileNotFoundError: no config.json.
      ValueError: not the config of a training run of this version.
    """
    path = os.path.join(workdir, rundir.CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not a training workdir")
    record = files.read_json(path)
    settings = record.get("settings") if isinstance(record, dict) else None
    if record.get("job") != JOB or not isinstance(settings, dict):
        raise ValueError(f"{workdir}: not a {JOB} workdir")
    try:
        config = Config(
            **{
                **settings,
                "model": registry.ModelConfig(**settings["model"]),
                "data": datasets.DataConfig(**settings["data"]),
                "qualities": tuple(settings["qualities"]),
                "heads": tuple(settings["heads"]),
            }
        )
    except (TypeError, KeyError) as e:
        raise ValueError(
            f"{path}: not a config this version wrote ({e})"
        ) from None
    return config, record


def make_optimizer(name: str, learning_rate: float) -> keras.Optimizer:
    """Adam or SGD with momentum.

    Args:
      name: one of `OPTIMIZERS`.
      learning_rate: the learning rate.

    Returns:
      The optimizer.

    Raises:
      ValueError: unknown name.
    """
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=SGD_MOMENTUM)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}: {name!r}")


def _keras_metrics() -> list[keras.metrics.Metric]:
    # Per-epoch logs only; results.json scores by the rank rule.
    return [
        keras.metrics.SparseCategoricalAccuracy(name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(TOP_K, name="top5"),
    ]


def _backup(
    workdir: str, run: rundir.RunDir | None, resume: bool
) -> checkpoint.Backup:
    """The training state after the last epoch: the chief writes it."""
    if run is not None:
        return checkpoint.Backup(run.path(checkpoint.BACKUP_DIR))
    # A non-chief worker reads the chief's last state when resuming.
    folder = os.path.join(workdir, checkpoint.BACKUP_DIR)
    return checkpoint.Backup(folder if resume else None, write=False)


def _features_file(
    name: str, workdir: str, run: rundir.RunDir | None, **depends_on: object
) -> trainers.FeaturesFile:
    """One part's features file (`FEATURES_FILE` or `EVAL_FEATURES_FILE`)."""
    key = features.features_key(**depends_on)
    if run is not None:
        return trainers.FeaturesFile(run.path(name), key)
    # A non-chief worker reads the file its chief computes.
    return trainers.FeaturesFile(os.path.join(workdir, name), key, write=False)


def _held_out(config: Config) -> datasets.Source | None:
    """The second source `eval_data`, if any."""
    if config.eval_data is None:
        return None
    return _eval_data_config(config).load()


def _identity(source: datasets.Source, held_out: datasets.Source | None):
    """What `resume` checks of the data: both sources' identities."""
    if held_out is not None and held_out.fingerprint == source.fingerprint:
        raise ValueError(
            f"eval_data ({held_out.description}) holds the same images as "
            f"data ({source.description}): evaluate on other images"
        )
    return {
        "data": source.fingerprint,
        "eval_data": None if held_out is None else held_out.fingerprint,
    }


def _parts(
    config: Config, source: datasets.Source, held_out: datasets.Source | None
) -> tuple[datasets.Source, datasets.Source, dict, dict]:
    """The training and held-out images, and what identifies each part."""
    if source.num_examples is None:
        raise ValueError(f"{source.description}: unknown size; pass a limit")
    if held_out is None:
        is_eval = splits.holdout(
            source.num_examples,
            config.num_eval,
            config.eval_fraction,
            config.seed,
        )
        holdout = {
            "num_eval": config.num_eval,
            "eval_fraction": config.eval_fraction,
            "seed": config.seed,
        }
        data = {"data": dataclasses.asdict(config.data), "holdout": holdout}
        return (
            datasets.subset(source, np.flatnonzero(~is_eval), "training"),
            datasets.subset(source, np.flatnonzero(is_eval), "held out"),
            {**data, "part": "training", "fingerprint": source.fingerprint},
            {**data, "part": "held out", "fingerprint": source.fingerprint},
        )
    return (
        source,
        held_out,
        {
            "data": dataclasses.asdict(config.data),
            "fingerprint": source.fingerprint,
        },
        {
            "data": dataclasses.asdict(_eval_data_config(config)),
            "fingerprint": held_out.fingerprint,
        },
    )


def _eval_data_config(config: Config) -> datasets.DataConfig:
    # All of eval_data, read like data (its limit, pixel limit, TFDS dir).
    return datasets.DataConfig(
        config.eval_data,
        limit=config.data.limit,
        tfds_data_dir=config.data.tfds_data_dir,
        max_pixels=config.data.max_pixels,
    ).resolved()


def check_config(config: Config) -> tuple[int, ...]:
    """Refuses settings `train_and_evaluate` cannot use, before any work.

    Pure Python (no TensorFlow op): a multi-worker strategy must still be
    the first TensorFlow work after it.

    Args:
      config: the settings.

    Returns:
      The qualities, checked.

    Raises:
      ValueError: one line naming the bad setting; also when nothing
        answers at `data_service`.
    """
    config.model.check()
    config.data.check()
    qualities = tuple(candidates.validate_qualities(config.qualities))
    if config.num_eval is not None:
        checks.integer("num_eval", config.num_eval, 1, note="None: a fraction")
    checks.number(
        "eval_fraction", config.eval_fraction, 0, 1, open_interval=True
    )
    checks.integer("seed", config.seed)
    if config.eval_data == "":
        raise ValueError("eval_data is empty: name a folder or tfds:<name>")
    if config.eval_data is not None:
        _eval_data_config(config).check()
        if config.num_eval is not None:
            raise ValueError(
                "num_eval holds images of data out; with eval_data every "
                "image of data trains: leave num_eval unset"
            )
    checks.choices_of("heads", config.heads, heads.HEADS, item="head")
    if config.train_backbone and len(config.heads) != 1:
        raise ValueError(
            "train_backbone trains the backbone with one head: pass one of "
            f"heads={','.join(heads.HEADS)}"
        )
    checks.one_of("head_init", config.head_init, network.HEAD_INITS)
    checks.one_of("optimizer", config.optimizer, OPTIMIZERS)
    checks.number("learning_rate", config.learning_rate, 0, open_interval=True)
    checks.integer("epochs", config.epochs, 1)
    checks.integer("batch_size", config.batch_size, 1)
    checks.one_of("strategy", config.strategy, distribute.STRATEGIES)
    checks.integer("num_cpu_devices", config.num_cpu_devices, 0)
    checks.data_service(config.data_service)
    return qualities


def train_and_evaluate(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Trains the heads, evaluates them against the backbone alone.

    Args:
      config: what to train.
      workdir: output directory (see the module docstring and
        `rundir.RunDir.open`).
      resume: continue an interrupted (or finished, with more `epochs`) run
        in `workdir` after its last finished epoch, reusing its cached
        features; its config, data and model files must be the same except
        for `RESUMABLE_CHANGES`. False: remove what earlier runs wrote
        there and start afresh.
      verbose: progress bars.

    Returns:
      The results (also `<workdir>/results.json`): top-1/top-5 (%) of the
      backbone alone (on the original) and of every head on the held-out
      images, over all classes and the classes present, each head's gain
      over the single-input control with its bootstrap interval, the split
      sizes and wall time.

    Raises:
      ValueError: invalid settings, or a workdir that cannot be used
        (another job's or user's, in use, or resumed with other settings).
    """
    start = time.time()
    qualities = check_config(config)
    # Next: a multi-worker strategy must exist before any other TF work.
    strategy = distribute.make_strategy(
        config.strategy, config.tpu, config.num_cpu_devices
    )
    chief = distribute.is_chief(strategy)
    held_out = _held_out(config)
    with job.open_job(
        JOB,
        config,
        workdir,
        lambda _: qualities,  # Checked above, before the strategy.
        resume,
        may_change=RESUMABLE_CHANGES,
        settings=lambda c, _: dataclasses.replace(c, qualities=qualities),
        identity=lambda source: _identity(source, held_out),
        prepare=lambda c, source: _parts(c, source, held_out),
        write=chief,
    ) as opened:
        config, run = opened.config, opened.run
        train_part, held_out_part, train_identity, held_out_identity = (
            opened.prepared
        )
        backup = _backup(workdir, run, resume)
        done = backup.last_epoch()
        if done > config.epochs:
            raise ValueError(
                f"{workdir}: already trained for {done} epochs; resume with "
                f"epochs >= {done}"
            )
        keras.utils.set_random_seed(config.seed)
        cache = config.cache_features and not config.train_backbone
        with strategy.scope():
            classifier = opened.classifier()
            extractor, dense = network.split_classifier(classifier.model)
            trained_heads = [
                heads.build(
                    kind,
                    len(network.input_names(qualities)),
                    int(extractor.output.shape[-1]),
                    dense,
                    config.head_init,
                    config.seed,
                )
                for kind in config.heads
            ]
            heads_model = heads.training_model(trained_heads)
            model = network.build_multi_input_model(
                classifier,
                qualities,
                trainable=config.train_backbone,
                head=heads_model,
            )
            (heads_model if cache else model).compile(
                optimizer=make_optimizer(
                    config.optimizer, config.learning_rate
                ),
                loss={
                    kind: keras.losses.SparseCategoricalCrossentropy()
                    for kind in config.heads
                },
                metrics={kind: _keras_metrics() for kind in config.heads},
            )
        logging.info(
            "Training %s on %s, evaluating on %s, %d replica(s)",
            ", ".join(config.heads),
            train_part.description,
            held_out_part.description,
            strategy.num_replicas_in_sync,
        )
        training = trainers.Job(
            model,
            heads_model,
            classifier,
            train_part,
            held_out_part,
            qualities,
            config.batch_size,
            config.seed,
            config.data_service,
            functools.partial(
                checkpoint.fit,
                epochs=config.epochs,
                run=run,
                backup=backup,
                verbose=verbose,
            ),
            verbose,
        )
        if cache:
            depends_on = {
                "qualities": qualities,
                "model": dataclasses.asdict(config.model),
                "image_size": classifier.image_size,
                "model_files": files.digest_inputs(config.model.input_files()),
            }
            predictions = trainers.on_features(
                training,
                _features_file(
                    features.FEATURES_FILE,
                    workdir,
                    run,
                    **depends_on,
                    **train_identity,
                ),
                _features_file(
                    EVAL_FEATURES_FILE,
                    workdir,
                    run,
                    **depends_on,
                    **held_out_identity,
                ),
            )
        else:
            predictions = trainers.on_images(training)
        present = np.union1d(predictions.train_labels, predictions.labels)
        summary = head_report.summarize(
            predictions.probabilities,
            predictions.labels,
            present.tolist(),
            config.seed,
        )
        # The head with the best held-out top-1 is the one exported.
        exported = max(config.heads, key=lambda k: summary["scores"][k]["top1"])
        results = {
            "model": config.model.name,
            "image_size": classifier.image_size,
            "inputs": list(network.input_names(qualities)),
            "train_data": train_part.description,
            "eval_data": held_out_part.description,
            "epochs": config.epochs,
            "num_replicas": strategy.num_replicas_in_sync,
            "num_train": int(len(predictions.train_labels)),
            "num_eval": int(len(predictions.labels)),
            "num_skipped": len(predictions.skipped),
            "classes_present": present.tolist(),
            **summary,
            "bootstrap": {
                "confidence": head_report.CONFIDENCE,
                "resamples": head_report.BOOTSTRAP_RESAMPLES,
                "unit": "held-out image (paired)",
                "seed": config.seed,
            },
            "exported_head": exported,
            "eval_ids": predictions.ids,
            "wall_time_s": time.time() - start,
        }
        if run is not None:
            run.write_errors(predictions.skipped)
            export_model = network.build_multi_input_model(
                classifier,
                qualities,
                head=heads_model.get_layer(exported),
            )
            with files.atomic_path(run.path(MODEL_FILE)) as tmp_path:
                export_model.save(tmp_path)
            run.write_json(RESULTS_FILE, results)
            with files.atomic_path(run.path(head_report.EPOCHS_PLOT)) as tmp:
                head_report.write_epochs_plot(
                    run.path(checkpoint.METRICS_FILE),
                    summary["scores"],
                    tmp,
                    # Counts, not paths: the plot is shown to others.
                    f"{config.model.name}: {results['num_train']} training, "
                    f"{results['num_eval']} held-out images",
                )
    logging.info(
        "Held-out images: %d; exported head: %s\n%s",
        results["num_eval"],
        exported,
        head_report.format_table(summary),
    )
    return results
