"""Trains and evaluates the multi-input model (SPEC.md, "Multi-input model").

Yang et al. 2021 train only the new softmax head over the concatenated pooled
features of the original and its JPEG versions; the backbone stays frozen.
So by default the backbone runs once per candidate image
(`multi_input.cache_features`, `<workdir>/features.npz`) and the head trains
on the cached features. With `cache_features=False` (or a trainable
backbone) the full multi-input model trains on the image pipeline instead.

`experiments/train_multi_input.py` is its command line. The workdir holds:

    config.json    the resolved config (a rerun must match it to resume)
    features.npz   cached [N, V, F] pooled features, labels, ids
    backup/        keras.callbacks.BackupAndRestore state: a rerun with the
                   same workdir resumes after the last finished epoch
    logs/          TensorBoard (where the tensorboard package is installed)
    metrics.jsonl  one line of training metrics per epoch
    model.keras    the full multi-input model (head trained)
    results.json   top-1/top-5 of the backbone alone and of the model on the
                   held-out images

Not reproduced: the paper trains on the ImageNet training set and tests on
the validation set; here one data source is split by image.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from compression_helps import candidates, datasets, models, multi_input

__all__ = [
    "OPTIMIZERS",
    "STRATEGIES",
    "Config",
    "make_optimizer",
    "export_from_workdir",
    "make_strategy",
    "smoke_config",
    "split_by_image",
    "train_and_evaluate",
]

OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("default", "mirrored", "tpu", "multi_worker")
SGD_MOMENTUM = 0.9
TOP_K = 5
# Settings a resumed run may change: they do not change what is trained.
_RESUMABLE_CHANGES = ("epochs", "strategy", "tpu", "num_cpu_devices")


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
    rng = np.random.default_rng(seed)
    is_eval = np.zeros(num_examples, bool)
    is_eval[rng.permutation(num_examples)[:num_eval]] = True
    return is_eval


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


def _prepare_workdir(workdir: str, config: Config) -> None:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        changed = sorted(
            k
            for k in current
            if previous.get(k) != current[k] and k not in _RESUMABLE_CHANGES
        )
        if changed:
            raise ValueError(
                f"{path}: {workdir} holds a run with other settings "
                f"({', '.join(changed)}); use a new workdir"
            )
    with open(path, "w") as f:
        json.dump(current, f, indent=2)


def _callbacks(workdir: str) -> list[keras.callbacks.Callback]:
    metrics_path = os.path.join(workdir, "metrics.jsonl")

    def log_epoch(epoch: int, logs: dict | None) -> None:
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        logging.info("epoch %s", row)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    callbacks = [
        # Kept after training (delete_checkpoint=False): a rerun then finds
        # all epochs done, and a larger `epochs` continues from there.
        keras.callbacks.BackupAndRestore(
            os.path.join(workdir, "backup"), delete_checkpoint=False
        ),
        keras.callbacks.LambdaCallback(on_epoch_end=log_epoch),
    ]
    # tf.summary needs the tensorboard package, which TF no longer requires.
    if importlib.util.find_spec("tensorboard") is not None:
        log_dir = os.path.join(workdir, "logs")
        callbacks.append(keras.callbacks.TensorBoard(log_dir))
    else:
        logging.warning("tensorboard is not installed: no TensorBoard logs")
    return callbacks


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


def _train_on_features(
    config: Config,
    workdir: str,
    model: keras.Model,
    backbone_head: keras.Model,
    classifier: models.Classifier,
    source: datasets.Source,
    is_eval: np.ndarray,
) -> dict:
    cached = multi_input.cache_features(
        os.path.join(workdir, "features.npz"),
        model,
        source.dataset,
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
    )
    held_out = is_eval[cached["index"]]
    features, labels = cached["features"], cached["labels"]
    train = _features_dataset(
        features[~held_out], labels[~held_out], config.batch_size, True, 0
    )
    evaluation = _features_dataset(
        features[held_out], labels[held_out], config.batch_size, False, 0
    )
    head = model.get_layer(multi_input.HEAD_LAYER)
    head.fit(
        train,
        epochs=config.epochs,
        validation_data=evaluation,
        callbacks=_callbacks(workdir),
        verbose=0,
    )
    eval_features, eval_labels = features[held_out], labels[held_out]
    return {
        "num_train": int(np.sum(~held_out)),
        "num_eval": int(np.sum(held_out)),
        "eval_ids": cached["ids"][held_out].tolist(),
        "backbone": _topk(
            backbone_head.predict(eval_features, verbose=0), eval_labels
        ),
        "multi_input": _topk(
            head.predict(eval_features, verbose=0), eval_labels
        ),
    }


def _split_dataset(
    source: datasets.Source, is_eval: np.ndarray, held_out: bool
) -> tf.data.Dataset:
    mask = tf.constant(is_eval)
    return source.dataset.filter(
        lambda example: tf.equal(mask[example["index"]], held_out)
    )


def _predict_images(
    model: keras.Model, dataset: tf.data.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    probabilities, labels = [], []
    for inputs, batch_labels in dataset:
        probabilities.append(np.asarray(model.predict_on_batch(inputs)))
        labels.append(batch_labels.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def _train_on_images(
    config: Config,
    workdir: str,
    model: keras.Model,
    backbone_model: keras.Model,
    classifier: models.Classifier,
    source: datasets.Source,
    is_eval: np.ndarray,
) -> dict:
    def images(held_out: bool, training: bool) -> tf.data.Dataset:
        return multi_input.make_dataset(
            _split_dataset(source, is_eval, held_out),
            classifier.resize,
            config.qualities,
            config.batch_size,
            training=training,
            seed=config.seed,
        )

    # Before training: a trainable backbone shares its layers with the model.
    probabilities, labels = _predict_images(backbone_model, images(True, False))
    backbone = _topk(probabilities, labels)
    model.fit(
        images(False, True),
        epochs=config.epochs,
        validation_data=images(True, False),
        callbacks=_callbacks(workdir),
        verbose=0,
    )
    probabilities, labels = _predict_images(model, images(True, False))
    return {
        "num_train": int(np.sum(~is_eval)),
        "num_eval": len(labels),
        "backbone": backbone,
        "multi_input": _topk(probabilities, labels),
    }


def train_and_evaluate(config: Config, workdir: str) -> dict:
    """Trains the multi-input model, evaluates it against the backbone alone.

    Rerunning with the same workdir resumes (see the module docstring).

    Args:
      config: what to train.
      workdir: output directory (created).

    Returns:
      The results (also `<workdir>/results.json`): top-1/top-5 of the
      backbone alone (on the original) and of the multi-input model, both
      on the held-out images, with the split sizes and wall time.

    Raises:
      ValueError: invalid settings, or a workdir holding another run.
    """
    start = time.time()
    strategy = make_strategy(
        config.strategy, config.tpu, config.num_cpu_devices
    )
    if config.head_init not in multi_input.HEAD_INITS:
        raise ValueError(f"head_init must be one of {multi_input.HEAD_INITS}")
    cache = config.cache_features and not config.train_backbone
    qualities = tuple(candidates.validate_qualities(config.qualities))
    data = config.data or datasets.sample_images_dir()
    source = datasets.load(data, config.limit, config.tfds_data_dir)
    if source.num_examples is None:
        raise ValueError(f"{source.description}: unknown size; pass a limit")
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        classifier = models.load_classifier(
            config.model, config.weights, config.image_size
        )
        config = dataclasses.replace(
            config,
            data=data,
            qualities=qualities,
            image_size=classifier.image_size,
        )
        _prepare_workdir(workdir, config)
        model = multi_input.build_multi_input_model(
            classifier,
            qualities,
            trainable=config.train_backbone,
            head_init=config.head_init,
            seed=config.seed,
        )
        head = model.get_layer(multi_input.HEAD_LAYER)
        # The backbone alone: its own classifier on the original's features.
        backbone_head = multi_input.build_head(
            len(multi_input.input_names(qualities)),
            int(head.input.shape[-1]),
            classifier.num_classes,
            name="backbone_head",
        )
        multi_input.init_head(
            backbone_head, multi_input.split_classifier(classifier.model)[1]
        )
        trained = head if cache else model
        trained.compile(
            optimizer=make_optimizer(config.optimizer, config.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=_metrics(),
        )
    logging.info(
        "Training the multi-input model on %s, %d replica(s)",
        source.description,
        strategy.num_replicas_in_sync,
    )
    is_eval = split_by_image(
        source.num_examples, config.num_eval, config.eval_fraction, config.seed
    )
    if cache:
        results = _train_on_features(
            config, workdir, model, backbone_head, classifier, source, is_eval
        )
    else:
        original = model.get_layer(f"preprocess_{multi_input.ORIGINAL}")
        pixels = keras.Input(original.input.shape[1:], dtype="uint8")
        normalised = multi_input.Preprocess(original.model)(pixels)
        backbone_model = keras.Model(
            pixels, classifier.model(normalised), name="backbone_alone"
        )
        results = _train_on_images(
            config, workdir, model, backbone_model, classifier, source, is_eval
        )
    model.save(os.path.join(workdir, "model.keras"))
    results = {
        "model": config.model,
        "inputs": list(multi_input.input_names(qualities)),
        "epochs": config.epochs,
        "num_replicas": strategy.num_replicas_in_sync,
        **results,
        "wall_time_s": time.time() - start,
    }
    with open(os.path.join(workdir, "results.json"), "w") as f:
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
    model_path = os.path.join(workdir, "model.keras")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path}: no trained model")
    with open(os.path.join(workdir, "config.json")) as f:
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
