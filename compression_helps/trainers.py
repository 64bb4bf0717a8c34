"""The two ways `train` trains the multi-input model, and their scores.

`on_features` trains the head alone on cached backbone features (SPEC.md:
the backbone is frozen, so its features never change); `on_images` trains
the whole model on the image pipeline (a trainable backbone, or data too
large to cache). Both score the backbone alone (on the original) and the
multi-input model on the held-out images with the evaluation's rank rule
(`accuracy`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from compression_helps import (
    candidates,
    checkpoint,
    datasets,
    distribute,
    evaluate,
    features,
    metrics,
    models,
    multi_input,
    rundir,
)

__all__ = ["Job", "accuracy", "on_features", "on_images"]


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) by the evaluation's rank rule.

    SPEC.md ("Ranks"): top-k correct iff fewer than k classes have a
    strictly higher probability than the true label (so ties count in the
    label's favour, unlike an arg-sort).

    Args:
      probabilities: `[N, C]`.
      labels: `[N]` true class indices in [0, C).

    Returns:
      `{"top1": ..., "top5": ...}` in percent.
    """
    # [N, 1]: one candidate.
    ranks = evaluate.ranks_of(probabilities, labels).numpy()[:, None]
    only = np.zeros(len(ranks), np.int64)
    return {
        "top1": metrics.topk_accuracy(ranks, only, 1),
        "top5": metrics.topk_accuracy(ranks, only, evaluate.TOP_K),
    }


def _num_labelled(source: datasets.Source) -> int | None:
    # For the progress only: no pass over the data to count them.
    known = source.known_labels
    return None if known is None else int(np.sum(known >= 0))


@dataclasses.dataclass(frozen=True)
class Job:
    """What both ways of training need.

    Attributes:
      model: the multi-input model (`multi_input.build_multi_input_model`);
        for `on_images` compiled, for `on_features` its head compiled.
      classifier: its backbone.
      source: the images.
      is_eval: `[N]` bool, the held-out images of `source`.
      qualities: JPEG QFs of candidates 1..V-1.
      batch_size: images (or feature rows) per step.
      seed: the training data's shuffle seed (`checkpoint.epoch_seed`).
      data_service: tf.data service dispatcher for the JPEG work, or None.
      fit: `(model, epoch -> train, evaluation) -> None`: resumable
        training (`checkpoint.fit`).
      verbose: progress bars.
    """

    model: keras.Model
    classifier: models.Classifier
    source: datasets.Source
    is_eval: np.ndarray
    qualities: tuple[int, ...]
    batch_size: int
    seed: int
    data_service: str | None
    fit: Callable[
        [keras.Model, Callable[[int], tf.data.Dataset], tf.data.Dataset], None
    ]
    verbose: bool = True


def _labelled(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Label -1: the file name names no ImageNet class; nothing to learn.
    return dataset.filter(lambda example: example["label"] >= 0)


def _rows_dataset(
    rows: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None,
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((rows, labels))
    if shuffle_seed is not None:  # Training: one epoch's order.
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def on_features(
    job: Job, path: str | None, key: str, write: bool = True
) -> tuple[dict, list[rundir.SkippedImage]]:
    """Trains the head on cached features (`features.cache_features`).

    Args:
      job: the training run; its backbone must be frozen.
      path: the features file (`features.FEATURES_FILE` of the run).
      key: what the features depend on (`features.features_key`).
      write: write the features file (False: a non-chief worker).

    Returns:
      The results (split sizes, held-out ids and scores) and the images
      that are not in the cache, with the reason.
    """
    classifier = job.classifier
    cached = features.cache_features(
        path,
        job.model,
        _labelled(job.source.dataset),
        classifier.resize,
        job.qualities,
        job.batch_size,
        key=key,
        data_service=job.data_service,
        verbose=job.verbose,
        write=write,
        num_examples=_num_labelled(job.source),
    )

    def example_fn(example):  # One image's work, re-run for the reason.
        return candidates.make_candidates(
            example, classifier.resize, job.qualities
        )

    # Unlabelled or undecodable images are missing from the cache.
    missing = np.setdiff1d(np.arange(len(job.is_eval)), cached["index"])
    skipped = [
        datasets.diagnose(job.source, int(i), example_fn) for i in missing
    ]
    held_out = job.is_eval[cached["index"]]
    rows, labels = cached["features"], cached["labels"]

    def split(held: bool, epoch: int | None = None) -> tf.data.Dataset:
        keep = held_out == held
        seed = None if held else checkpoint.epoch_seed(job.seed, epoch)
        return _rows_dataset(rows[keep], labels[keep], job.batch_size, seed)

    head = job.model.get_layer(multi_input.HEAD_LAYER)
    # The backbone alone: its own classifier on the original's features.
    with head.distribute_strategy.scope():
        backbone_head = multi_input.build_head(
            *head.input.shape[1:], classifier.num_classes, name="backbone_head"
        )
    multi_input.init_head(
        backbone_head, multi_input.split_classifier(classifier.model)[1]
    )
    job.fit(head, lambda epoch: split(False, epoch), split(True))
    eval_rows, eval_labels = rows[held_out], labels[held_out]
    results = {
        "num_train": int(np.sum(~held_out)),
        "num_eval": int(np.sum(held_out)),
        "num_skipped": len(skipped),
        "eval_ids": cached["ids"][held_out].tolist(),
        "backbone": accuracy(
            distribute.predict_batch(backbone_head, eval_rows), eval_labels
        ),
        "multi_input": accuracy(
            distribute.predict_batch(head, eval_rows), eval_labels
        ),
    }
    return results, skipped


def _predict_images(
    model: keras.Model, dataset: tf.data.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    probabilities, labels = [], []
    for inputs, batch_labels in dataset:
        probabilities.append(distribute.predict_batch(model, inputs))
        labels.append(batch_labels.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def on_images(job: Job) -> dict:
    """Trains the whole model on the image pipeline.

    Args:
      job: the training run.

    Returns:
      The results: split sizes and held-out scores.
    """

    def images(held_out: bool, epoch: int | None = None) -> tf.data.Dataset:
        indices = np.flatnonzero(job.is_eval == held_out)
        return multi_input.make_dataset(
            _labelled(job.source.select(indices)),
            job.classifier.resize,
            job.qualities,
            job.batch_size,
            training=not held_out,
            seed=None if held_out else checkpoint.epoch_seed(job.seed, epoch),
            data_service=job.data_service,
        )

    # Before training: a trainable backbone shares its layers with the model.
    with job.model.distribute_strategy.scope():
        backbone = multi_input.backbone_alone(job.classifier)
    originals = images(True).map(  # The backbone alone sees the original.
        lambda inputs, labels: (inputs[multi_input.ORIGINAL], labels)
    )
    backbone_scores = accuracy(*_predict_images(backbone, originals))
    job.fit(job.model, lambda epoch: images(False, epoch), images(True))
    probabilities, labels = _predict_images(job.model, images(True))
    return {
        "num_train": int(np.sum(~job.is_eval)),
        "num_eval": len(labels),
        "backbone": backbone_scores,
        "multi_input": accuracy(probabilities, labels),
    }
