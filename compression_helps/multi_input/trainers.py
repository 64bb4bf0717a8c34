"""The two ways `train` trains the heads, and what they predict afterwards.

`on_features` trains the heads alone on cached backbone features (SPEC.md:
the backbone is frozen, so its features never change); `on_images` trains
the whole multi-input model on the image pipeline (a trainable backbone, or
data too large to cache). Both return the held-out probabilities of the
backbone alone (on the original) and of every head, for
`head_report.summarize`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from compression_helps.core import rundir
from compression_helps.engine import candidates
from compression_helps.models import registry
from compression_helps.multi_input import (
    checkpoint,
    distribute,
    features,
    head_report,
    heads,
    network,
)
from compression_helps.sources import datasets

__all__ = ["Job", "Predictions", "on_features", "on_images"]


def _num_labelled(source: datasets.Source) -> int | None:
    # For the progress only: no pass over the data to count them.
    known = source.known_labels
    return None if known is None else int(np.sum(known >= 0))


@dataclasses.dataclass(frozen=True)
class Job:
    """What both ways of training need.

    Attributes:
      model: the multi-input model (`network.build_multi_input_model`)
        whose head is `heads`; for `on_images` compiled.
      heads: `heads.training_model`: `[B, V, F]` -> `{head: [B, C]}`; for
        `on_features` compiled.
      classifier: the backbone.
      train: the training images.
      held_out: the held-out images.
      qualities: JPEG QFs of candidates 1..V-1.
      batch_size: images (or feature rows) per step.
      seed: the training data's shuffle seed (`checkpoint.epoch_seed`).
      data_service: tf.data service dispatcher for the JPEG work, or None.
      fit: `(model, epoch -> train, evaluation) -> None`: resumable
        training (`checkpoint.fit`).
      verbose: progress bars.
    """

    model: keras.Model
    heads: keras.Model
    classifier: registry.Classifier
    train: datasets.Source
    held_out: datasets.Source
    qualities: tuple[int, ...]
    batch_size: int
    seed: int
    data_service: str | None
    fit: Callable[
        [keras.Model, Callable[[int], tf.data.Dataset], tf.data.Dataset], None
    ]
    verbose: bool = True

    def targets(self, labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """The same labels for every head's output."""
        return {name: labels for name in self.heads.output}


@dataclasses.dataclass(frozen=True)
class Predictions:
    """What the trained heads say about the held-out images.

    Attributes:
      probabilities: `{head_report.BACKBONE or head: [N, C]}`.
      labels: `[N]` labels of the held-out images.
      ids: `[N]` their ids.
      train_labels: labels of the training images (the classes present).
      skipped: images left out, with the reason (cached features only).
    """

    probabilities: dict[str, np.ndarray]
    labels: np.ndarray
    ids: list[str]
    train_labels: np.ndarray
    skipped: list[rundir.SkippedImage] = dataclasses.field(default_factory=list)


def _labelled(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Label -1: the file name names no ImageNet class; nothing to learn.
    return dataset.filter(lambda example: example["label"] >= 0)


def _rows_dataset(
    rows: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None,
    targets: Callable[[tf.Tensor], dict[str, tf.Tensor]],
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((rows, labels))
    if shuffle_seed is not None:  # Training: one epoch's order.
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed)
    return (
        dataset.batch(batch_size)
        .map(lambda x, y: (x, targets(y)))
        .prefetch(tf.data.AUTOTUNE)
    )


@dataclasses.dataclass(frozen=True)
class FeaturesFile:
    """Where one part's features are cached, and what they depend on.

    Attributes:
      path: the `.npz` file; None: computed, not cached.
      key: `features.features_key` of the part.
      write: compute and write the file; False: a non-chief worker, which
        reads the file its chief computes (once for all workers).
    """

    path: str | None
    key: str
    write: bool = True


def _cached(
    job: Job, source: datasets.Source, cache: FeaturesFile
) -> tuple[dict[str, np.ndarray], list[rundir.SkippedImage]]:
    classifier = job.classifier
    strategy = job.heads.distribute_strategy
    if cache.write:
        cached = features.cache_features(
            cache.path,
            job.model,
            _labelled(source.dataset),
            classifier.resize,
            job.qualities,
            job.batch_size,
            key=cache.key,
            data_service=job.data_service,
            verbose=job.verbose,
            num_examples=_num_labelled(source),
        )
        distribute.barrier(strategy)  # The other workers may read it now.
    else:
        distribute.barrier(strategy)  # Until the chief has written it.
        cached = features.read_cache(cache.path, cache.key)
        if cached is None:
            raise ValueError(
                f"{cache.path}: not the features the chief computed; every "
                "worker needs the chief's workdir (a shared file system)"
            )

    def example_fn(example):  # One image's work, re-run for the reason.
        return candidates.make_candidates(
            example, classifier.resize, job.qualities
        )

    # Unlabelled or undecodable images are missing from the cache.
    missing = np.setdiff1d(np.arange(source.count()), cached["index"])
    skipped = [datasets.diagnose(source, int(i), example_fn) for i in missing]
    return cached, skipped


def on_features(
    job: Job, train_cache: FeaturesFile, held_out_cache: FeaturesFile
) -> Predictions:
    """Trains the heads on cached features (`features.cache_features`).

    Args:
      job: the training run; its backbone must be frozen.
      train_cache: the training images' features file.
      held_out_cache: the held-out images' features file.

    Returns:
      The held-out predictions, and the images left out of either cache.
    """
    train, train_skipped = _cached(job, job.train, train_cache)
    held_out, held_out_skipped = _cached(job, job.held_out, held_out_cache)

    def training(epoch: int) -> tf.data.Dataset:
        return _rows_dataset(
            train["features"],
            train["labels"],
            job.batch_size,
            checkpoint.epoch_seed(job.seed, epoch),
            job.targets,
        )

    evaluation = _rows_dataset(
        held_out["features"],
        held_out["labels"],
        job.batch_size,
        None,
        job.targets,
    )
    job.fit(job.heads, training, evaluation)
    rows = held_out["features"]
    # The backbone alone: an untrained single-input head is its classifier.
    dense = network.split_classifier(job.classifier.model)[1]
    with job.heads.distribute_strategy.scope():
        backbone = heads.build(heads.SINGLE_INPUT, *rows.shape[1:], dense)
    probabilities = {
        head_report.BACKBONE: distribute.predict_batch(backbone, rows),
        **distribute.predict_batch(job.heads, rows),
    }
    return Predictions(
        probabilities,
        held_out["labels"],
        held_out["ids"].tolist(),
        train["labels"],
        train_skipped + held_out_skipped,
    )


def _predict_images(
    model: keras.Model, dataset: tf.data.Dataset
) -> tuple[dict[str, np.ndarray] | np.ndarray, np.ndarray, list[str]]:
    probabilities, labels, ids = [], [], []
    for inputs, batch_labels, batch_ids in dataset:
        probabilities.append(distribute.predict_batch(model, inputs))
        labels.append(batch_labels.numpy())
        ids.extend(i.decode() for i in batch_ids.numpy())
    if isinstance(probabilities[0], dict):
        probabilities = {
            k: np.concatenate([p[k] for p in probabilities])
            for k in probabilities[0]
        }
    else:
        probabilities = np.concatenate(probabilities)
    return probabilities, np.concatenate(labels), ids


def on_images(job: Job) -> Predictions:
    """Trains the whole model on the image pipeline.

    Args:
      job: the training run.

    Returns:
      The held-out predictions.
    """

    def images(source: datasets.Source, epoch: int | None = None):
        return network.make_dataset(
            _labelled(source.dataset),
            job.classifier.resize,
            job.qualities,
            job.batch_size,
            training=epoch is not None,
            seed=None
            if epoch is None
            else checkpoint.epoch_seed(job.seed, epoch),
            data_service=job.data_service,
            with_ids=True,
        )

    def for_fit(dataset):
        return dataset.map(
            lambda inputs, labels, ids: (inputs, job.targets(labels))
        )

    # Before training: a trainable backbone shares its layers with the model.
    with job.model.distribute_strategy.scope():
        backbone = network.backbone_alone(job.classifier)
    originals = images(job.held_out).map(  # The backbone alone: the original.
        lambda inputs, labels, ids: (inputs[network.ORIGINAL], labels, ids)
    )
    backbone_probabilities = _predict_images(backbone, originals)[0]
    job.fit(
        job.model,
        lambda epoch: for_fit(images(job.train, epoch)),
        for_fit(images(job.held_out)),
    )
    probabilities, labels, ids = _predict_images(
        job.model, images(job.held_out)
    )
    train_labels = job.train.labels()
    return Predictions(
        {head_report.BACKBONE: backbone_probabilities, **probabilities},
        labels,
        ids,
        train_labels[train_labels >= 0],
    )
