"""Trains and evaluates the multi-input model (SPEC.md, "Multi-input model").

Yang et al. 2021 train only the new softmax head over the concatenated pooled
features of the original and its JPEG versions; the backbone stays frozen.
So by default the backbone runs once per candidate image
(`multi_input.cache_features`, `<workdir>/features.npz`) and the head trains
on the cached features. The cache holds N x V x F float32 values (about 4.5
GB for 50,000 images with Inception V3), so for the ImageNet training set
use `cache_features=False`: the full multi-input model then trains on the
image pipeline, as it also does with a trainable backbone.

`experiments/train_multi_input.py` is its command line. The workdir holds:

    config.json    the resolved config (`resume` needs the same one, except
                   for `RESUMABLE_CHANGES` such as more epochs)
    features.npz   cached [N, V, F] pooled features, labels, ids (reused
                   while the backbone, weights, data and QFs are the same)
    backup/        keras.callbacks.BackupAndRestore state after every epoch:
                   `resume=True` continues after the last finished epoch
    logs/          TensorBoard scalars per epoch (logs/train, logs/validation)
    metrics.jsonl  one line of training metrics per epoch
    model.keras    the full multi-input model (head trained)
    results.json   top-1/top-5 of the backbone alone and of the model on the
                   held-out images

Not reproduced: the paper trains on the ImageNet training set and tests on
the validation set; here one data source is split by image.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from compression_helps import (
    candidates,
    datasets,
    evaluate,
    models,
    multi_input,
)
from compression_helps import workdir as workdir_lib

__all__ = [
    "OPTIMIZERS",
    "RESUMABLE_CHANGES",
    "STRATEGIES",
    "Config",
    "export_from_workdir",
    "make_optimizer",
    "make_strategy",
    "smoke_config",
    "split_by_image",
    "train_and_evaluate",
]

OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("default", "mirrored", "tpu", "multi_worker")
SGD_MOMENTUM = 0.9
TOP_K = evaluate.TOP_K  # Top-5, as everywhere in the project.
# Settings a resumed run may change: more epochs, or where the work runs.
RESUMABLE_CHANGES = (
    "epochs",
    "strategy",
    "tpu",
    "num_cpu_devices",
    "data_service",
)
_FEATURES_FILE = "features.npz"
_MODEL_FILE = "model.keras"
_RESULTS_FILE = "results.json"
_METRICS_FILE = "metrics.jsonl"
_BACKUP_DIR = "backup"
_LOG_DIR = "logs"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `train_and_evaluate` trains; train_multi_input.py mirrors it.

    Attributes:
      model: registry name or Keras model file of the backbone.
      weights: "imagenet", a weights file, or None for random weights.
      data: folder or `tfds:<name>[:<split>]`; empty: the ImageNet sample
        images (downloaded once).
      limit: use only the first `limit` images.
      tfds_data_dir: TFDS data directory.
      qualities: JPEG QFs of candidates 1..V-1.
      image_size: backbone input side; None for the backbone's own.
      num_eval: held-out images; None: `eval_fraction` of them.
      eval_fraction: held-out fraction when `num_eval` is None.
      seed: seed of the split, the head's random init, shuffling and Keras.
      head_init: one of `multi_input.HEAD_INITS`.
      train_backbone: fine-tune the backbone too (not in SPEC.md; implies
        no feature cache).
      cache_features: train the head on cached backbone features.
      optimizer: one of `OPTIMIZERS` (SGD with momentum `SGD_MOMENTUM`).
      learning_rate: optimizer learning rate.
      epochs: training epochs (raise it to train a finished run further).
      batch_size: images (or feature rows) per step, over all replicas.
      strategy: one of `STRATEGIES` (`tf.distribute`).
      tpu: TPU name or address for `strategy="tpu"` ("" for the local one).
      num_cpu_devices: split the CPU into this many logical devices (for
        `mirrored` without GPUs, e.g. in tests); 0: leave as is.
      data_service: tf.data service dispatcher (`grpc://host:port`) whose
        workers do the JPEG work (feature caching and image training);
        None: this process does it.
    """

    model: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    data: str = ""
    limit: int | None = None
    tfds_data_dir: str | None = None
    qualities: tuple[int, ...] = candidates.QUALITIES
    image_size: int | None = None
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
        model="resnet50v2",
        weights=None,
        image_size=32,
        qualities=(90, 10),
        limit=config.limit or 8,
        num_eval=2,
        epochs=1,
        batch_size=4,
    )


def make_strategy(
    name: str = "default", tpu: str = "", num_cpu_devices: int = 0
) -> tf.distribute.Strategy:
    """A `tf.distribute` strategy by name.

    Args:
      name: "default" (no distribution), "mirrored" (all local GPUs, else all
        logical CPUs), "tpu" or "multi_worker" (`TF_CONFIG` describes the
        cluster).
      tpu: TPU name or address for "tpu".
      num_cpu_devices: split the CPU into this many logical devices first;
        only possible before TensorFlow initialises its devices.

    Returns:
      The strategy.

    Raises:
      ValueError: unknown name, or devices already initialised.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}: {name!r}")
    if num_cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        configs = [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
        try:
            tf.config.set_logical_device_configuration(cpu, configs)
        except RuntimeError as e:  # Devices already initialised.
            raise ValueError(f"cannot split the CPU: {e}") from None
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.MultiWorkerMirroredStrategy()


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


def split_by_image(
    num_examples: int,
    num_eval: int | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Which images are held out: a seeded random subset.

    Args:
      num_examples: N, images in the source (indexed 0..N-1).
      num_eval: held-out images; None: `round(eval_fraction * N)`.
      eval_fraction: in [0, 1).
      seed: the subset's seed.

    Returns:
      `[N]` bool, True for held-out images.

    Raises:
      ValueError: a split that leaves no training or no held-out image.
    """
    if num_eval is None:
        if not 0 <= eval_fraction < 1:
            raise ValueError(
                f"eval_fraction must be in [0, 1): {eval_fraction}"
            )
        num_eval = int(round(eval_fraction * num_examples))
    if not 0 < num_eval < num_examples:
        raise ValueError(
            f"cannot hold out {num_eval} of {num_examples} images: need at "
            "least one training and one held-out image"
        )
    return datasets.heldout_mask(num_examples, num_eval, seed)


def _metrics() -> list[keras.metrics.Metric]:
    return [
        keras.metrics.SparseCategoricalAccuracy(name="top1"),
        keras.metrics.SparseTopKCategoricalAccuracy(TOP_K, name="top5"),
    ]


def _topk(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    # Ties broken by class index, as np.argsort; labels -1 never match.
    order = np.argsort(-probabilities, axis=-1, kind="stable")
    hits = order[:, :TOP_K] == labels[:, None]
    return {
        "top1": float(np.mean(hits[:, 0])),
        "top5": float(np.mean(hits.any(axis=-1))),
    }


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    # Only one worker of a multi-worker run writes the workdir's files (the
    # chief, by the TF_CONFIG rule); every other strategy has one writer.
    return strategy.extended.should_checkpoint


def _prepare_workdir(workdir: str, config: Config, resume: bool) -> None:
    workdir_lib.prepare(workdir)
    workdir_lib.write_config(workdir, config, resume, RESUMABLE_CHANGES)
    if not resume:  # A fresh run; the feature cache checks itself.
        shutil.rmtree(os.path.join(workdir, _BACKUP_DIR), ignore_errors=True)
        shutil.rmtree(os.path.join(workdir, _LOG_DIR), ignore_errors=True)
        for name in (_METRICS_FILE, _MODEL_FILE, _RESULTS_FILE):
            if os.path.exists(os.path.join(workdir, name)):
                os.remove(os.path.join(workdir, name))


class _EpochLogs(keras.callbacks.Callback):
    """Appends each epoch's metrics to a JSON-lines file and TensorBoard.

    Keras' `TensorBoard` callback needs the tensorboard package, which
    TensorFlow no longer installs; `tf.summary.write` with the scalars
    plugin's metadata writes the same event files with TensorFlow alone.
    """

    def __init__(self, workdir: str):
        super().__init__()
        self._metrics_path = os.path.join(workdir, _METRICS_FILE)
        self._log_dir = os.path.join(workdir, _LOG_DIR)
        self._writers: dict[str, tf.summary.SummaryWriter] = {}
        metadata = summary_pb2.SummaryMetadata()
        metadata.plugin_data.plugin_name = "scalars"
        self._metadata = metadata.SerializeToString()

    def _writer(self, split: str) -> tf.summary.SummaryWriter:
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(
                os.path.join(self._log_dir, split)
            )
        return self._writers[split]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Writes the epoch's metrics (`val_*` under logs/validation)."""
        row = {k: float(v) for k, v in (logs or {}).items()}
        logging.info("epoch %d: %s", epoch + 1, row)
        with open(self._metrics_path, "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, **row}) + "\n")
        for name, value in row.items():
            split = "validation" if name.startswith("val_") else "train"
            tag = "epoch_" + name.removeprefix("val_")  # Keras' tag names.
            with self._writer(split).as_default():
                tf.summary.write(
                    tag, value, step=epoch + 1, metadata=self._metadata
                )
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        """Closes the event files."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def _callbacks(
    workdir: str, strategy: tf.distribute.Strategy
) -> list[keras.callbacks.Callback]:
    callbacks = [
        # Kept after training (delete_checkpoint=False): a resumed run with
        # more epochs continues from the last one.
        keras.callbacks.BackupAndRestore(
            os.path.join(workdir, _BACKUP_DIR), delete_checkpoint=False
        ),
    ]
    if _is_chief(strategy):
        callbacks.append(_EpochLogs(workdir))
    return callbacks


def _labelled(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Label -1: the file name names no ImageNet class; nothing to learn.
    return dataset.filter(lambda example: example["label"] >= 0)


def _features_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    training: bool,
    seed: int,
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    if training:  # Shuffle before batching; a new order every epoch.
        dataset = dataset.shuffle(
            len(labels), seed=seed, reshuffle_each_iteration=True
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _fit(
    trained: keras.Model,
    train: tf.data.Dataset,
    evaluation: tf.data.Dataset,
    config: Config,
    workdir: str,
    verbose: bool,
) -> None:
    trained.fit(
        train,
        epochs=config.epochs,
        validation_data=evaluation,
        shuffle=False,  # The data sets shuffle themselves, seeded.
        callbacks=_callbacks(workdir, trained.distribute_strategy),
        verbose=1 if verbose else 0,
    )


def _train_on_features(
    config: Config,
    workdir: str,
    model: keras.Model,
    classifier: models.Classifier,
    source: datasets.Source,
    is_eval: np.ndarray,
    verbose: bool,
) -> dict:
    cached = multi_input.cache_features(
        os.path.join(workdir, _FEATURES_FILE),
        model,
        _labelled(source.dataset),
        classifier.resize,
        config.qualities,
        config.batch_size,
        key={
            "model": config.model,
            "weights": config.weights,
            "data": config.data,
            "limit": config.limit,
            "image_size": classifier.image_size,
        },
        data_service=config.data_service,
        verbose=verbose,
    )
    # Unlabelled or undecodable images are missing from the cache.
    held_out = is_eval[cached["index"]]
    features, labels = cached["features"], cached["labels"]

    def rows(held: bool) -> tf.data.Dataset:
        keep = held_out == held
        return _features_dataset(
            features[keep],
            labels[keep],
            config.batch_size,
            training=not held,
            seed=config.seed,
        )

    head = model.get_layer(multi_input.HEAD_LAYER)
    # The backbone alone: its own classifier on the original's features.
    with head.distribute_strategy.scope():
        backbone_head = multi_input.build_head(
            *head.input.shape[1:], classifier.num_classes, name="backbone_head"
        )
    multi_input.init_head(
        backbone_head, multi_input.split_classifier(classifier.model)[1]
    )
    _fit(head, rows(False), rows(True), config, workdir, verbose)
    eval_features, eval_labels = features[held_out], labels[held_out]
    return {
        "num_train": int(np.sum(~held_out)),
        "num_eval": int(np.sum(held_out)),
        "eval_ids": cached["ids"][held_out].tolist(),
        "backbone": _topk(
            multi_input.predict_batch(backbone_head, eval_features),
            eval_labels,
        ),
        "multi_input": _topk(
            multi_input.predict_batch(head, eval_features), eval_labels
        ),
    }


def _predict_images(
    model: keras.Model, dataset: tf.data.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    probabilities, labels = [], []
    for inputs, batch_labels in dataset:
        probabilities.append(multi_input.predict_batch(model, inputs))
        labels.append(batch_labels.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def _train_on_images(
    config: Config,
    workdir: str,
    model: keras.Model,
    classifier: models.Classifier,
    source: datasets.Source,
    is_eval: np.ndarray,
    verbose: bool,
) -> dict:
    def images(held_out: bool) -> tf.data.Dataset:
        return multi_input.make_dataset(
            _labelled(source.select(np.flatnonzero(is_eval == held_out))),
            classifier.resize,
            config.qualities,
            config.batch_size,
            training=not held_out,
            seed=config.seed,
            data_service=config.data_service,
        )

    # Before training: a trainable backbone shares its layers with the model.
    with model.distribute_strategy.scope():
        backbone = multi_input.backbone_alone(classifier)
    originals = images(True).map(  # The backbone alone sees the original.
        lambda inputs, labels: (inputs[multi_input.ORIGINAL], labels)
    )
    probabilities, labels = _predict_images(backbone, originals)
    backbone_metrics = _topk(probabilities, labels)
    _fit(model, images(False), images(True), config, workdir, verbose)
    probabilities, labels = _predict_images(model, images(True))
    return {
        "num_train": int(np.sum(~is_eval)),
        "num_eval": len(labels),
        "backbone": backbone_metrics,
        "multi_input": _topk(probabilities, labels),
    }


def train_and_evaluate(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Trains the multi-input model, evaluates it against the backbone alone.

    Args:
      config: what to train.
      workdir: output directory (created; see the module docstring).
      resume: continue an interrupted (or finished, with more `epochs`) run
        in `workdir` after its last finished epoch; its config must be the
        same except for `RESUMABLE_CHANGES`. False starts afresh (only the
        feature cache is kept, and reused if still valid).
      verbose: progress bars.

    Returns:
      The results (also `<workdir>/results.json`): top-1/top-5 of the
      backbone alone (on the original) and of the multi-input model, both
      on the held-out images, with the split sizes and wall time.

    Raises:
      ValueError: invalid settings, or resuming a workdir of another run.
    """
    start = time.time()
    # First: a multi-worker strategy must exist before any other TF work.
    strategy = make_strategy(
        config.strategy, config.tpu, config.num_cpu_devices
    )
    if config.head_init not in multi_input.HEAD_INITS:
        raise ValueError(f"head_init must be one of {multi_input.HEAD_INITS}")
    make_optimizer(config.optimizer, config.learning_rate)  # Checks the name.
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be positive")
    cache = config.cache_features and not config.train_backbone
    qualities = tuple(candidates.validate_qualities(config.qualities))
    data = config.data or datasets.sample_images_dir()
    source = datasets.load(data, config.limit, config.tfds_data_dir)
    if source.num_examples is None:
        raise ValueError(f"{source.description}: unknown size; pass a limit")
    is_eval = split_by_image(
        source.num_examples, config.num_eval, config.eval_fraction, config.seed
    )
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        classifier = models.load_classifier(
            config.model, config.weights, config.image_size
        )
        model = multi_input.build_multi_input_model(
            classifier,
            qualities,
            trainable=config.train_backbone,
            head_init=config.head_init,
            seed=config.seed,
        )
        trained = model.get_layer(multi_input.HEAD_LAYER) if cache else model
        trained.compile(
            optimizer=make_optimizer(config.optimizer, config.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=_metrics(),
        )
    config = dataclasses.replace(
        config, data=data, qualities=qualities, image_size=classifier.image_size
    )
    if _is_chief(strategy):
        _prepare_workdir(workdir, config, resume)
    logging.info(
        "Training the multi-input model on %s (%d held out), %d replica(s)",
        source.description,
        int(is_eval.sum()),
        strategy.num_replicas_in_sync,
    )
    train_fn = _train_on_features if cache else _train_on_images
    results = train_fn(
        config, workdir, model, classifier, source, is_eval, verbose
    )
    results = {
        "model": config.model,
        "inputs": list(multi_input.input_names(qualities)),
        "epochs": config.epochs,
        "num_replicas": strategy.num_replicas_in_sync,
        **results,
        "wall_time_s": time.time() - start,
    }
    if _is_chief(strategy):
        model.save(os.path.join(workdir, _MODEL_FILE))
        with open(os.path.join(workdir, _RESULTS_FILE), "w") as f:
            json.dump(results, f, indent=2)
    logging.info(
        "Held-out top-1/top-5: backbone %s, multi-input %s",
        results["backbone"],
        results["multi_input"],
    )
    return results


def export_from_workdir(workdir: str, export_dir: str | None = None) -> str:
    """Exports a `train_and_evaluate` model as a SavedModel.

    See `multi_input.export_saved_model` for its two signatures.

    Args:
      workdir: the training workdir (`config.json`, `model.keras`).
      export_dir: output directory; None: `<workdir>/saved_model`.

    Returns:
      The SavedModel directory.

    Raises:
      FileNotFoundError: no trained model in `workdir`.
    """
    model_path = os.path.join(workdir, _MODEL_FILE)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path}: no trained model")
    with open(os.path.join(workdir, workdir_lib.CONFIG_FILE)) as f:
        config = json.load(f)
    # Only for its crop and resize: random weights are enough.
    classifier = models.load_classifier(
        config["model"], None, config["image_size"]
    )
    model = keras.saving.load_model(model_path, compile=False)
    export_dir = export_dir or os.path.join(workdir, "saved_model")
    multi_input.export_saved_model(
        model, classifier.resize, export_dir, tuple(config["qualities"])
    )
    return export_dir
