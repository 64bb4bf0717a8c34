"""Classify every candidate of every image; store ranks, sizes and top-5.

SPEC.md ("Ranks"): the rank of the true label is 1 + the number of classes
with a strictly higher probability (1 = top-1); top-k correct iff
rank <= k. One model call per batch classifies all candidates of the batch's
images (B images -> B * V model inputs).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from compression_helps import candidates, datasets, models

__all__ = ["TOP_K", "Predictions", "predict"]

TOP_K = 5
PREDICTIONS_FILE = "predictions.npz"


@dataclasses.dataclass
class Predictions:
    """Per-image, per-candidate results (N images, V candidates).

    Attributes:
      ranks: `[N, V]` int32 rank of the true label (1 = top-1).
      sizes: `[N, V]` int64 candidate file sizes in bytes.
      topk: `[N, V, 5]` int32 top-5 class indices, most probable first.
      topk_probs: `[N, V, 5]` float32 their probabilities.
      labels: `[N]` int32 true class indices.
      qualities: `[V]` int32 JPEG QF of each candidate; 0 = the original.
      ids: `[N]` str image ids (path relative to the data folder, or TFDS
        file name).
    """

    ranks: np.ndarray
    sizes: np.ndarray
    topk: np.ndarray
    topk_probs: np.ndarray
    labels: np.ndarray
    qualities: np.ndarray
    ids: np.ndarray

    @property
    def num_images(self) -> int:
        """N."""
        return len(self.labels)

    def save(self, path: str) -> None:
        """Writes an `.npz`, atomically (never a half-written file)."""
        directory = os.path.dirname(os.path.abspath(path))
        with tempfile.NamedTemporaryFile(
            dir=directory, suffix=".npz.tmp", delete=False
        ) as f:
            np.savez(f, **dataclasses.asdict(self))
        os.replace(f.name, path)

    @classmethod
    def load(cls, path: str) -> Predictions:
        """Reads a file written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                **{f.name: data[f.name] for f in dataclasses.fields(cls)}
            )


def _classify_fn(model: keras.Model):
    """Compiled model step: candidates -> (ranks, top-k, top-k probs)."""

    @tf.function
    def classify(inputs: tf.Tensor, labels: tf.Tensor):
        # inputs: [B, V, S, S, 3] float32; labels: [B] int32.
        shape = tf.shape(inputs)
        flat = tf.reshape(inputs, tf.concat([[-1], shape[2:]], 0))
        probs = model(flat, training=False)  # [B * V, C]
        probs = tf.reshape(probs, [shape[0], shape[1], -1])  # [B, V, C]
        one_hot = tf.one_hot(labels, tf.shape(probs)[-1], dtype=probs.dtype)
        true_prob = tf.reduce_sum(probs * one_hot[:, None, :], -1)  # [B, V]
        higher = tf.cast(probs > true_prob[..., None], tf.int32)
        ranks = 1 + tf.reduce_sum(higher, -1)
        top = tf.math.top_k(probs, TOP_K)
        return ranks, top.indices, top.values

    return classify


def predict(
    classifier: models.Classifier,
    source: datasets.Source,
    qualities: Sequence[int] = candidates.QUALITIES,
    batch_size: int = 8,
    verbose: bool = True,
) -> Predictions:
    """Evaluates every candidate of every image of `source`.

    Args:
      classifier: the model and its preprocessing.
      source: labelled examples.
      qualities: JPEG QFs of candidates 1..V-1 (candidate 0 is the original).
      batch_size: images per model call.
      verbose: show a progress bar.

    Returns:
      The `Predictions`, in the order of `source`.

    Raises:
      ValueError: an image whose label is unknown (-1).
    """
    qualities = candidates.validate_qualities(qualities)
    batches = candidates.candidate_batches(
        source.dataset, classifier.preprocess, qualities, batch_size
    )
    classify = _classify_fn(classifier.model)
    progress = keras.utils.Progbar(
        source.num_examples, unit_name="image", verbose=1 if verbose else 0
    )
    results = {name: [] for name in ("ranks", "sizes", "topk", "topk_probs")}
    labels, ids = [], []
    for batch in batches:
        batch_labels = batch["label"].numpy()
        if (batch_labels < 0).any():
            bad = batch["id"].numpy()[batch_labels < 0][0].decode()
            raise ValueError(
                f"{bad}: no ImageNet label (file name has no wnid)"
            )
        ranks, topk, topk_probs = classify(batch["inputs"], batch["label"])
        results["ranks"].append(ranks.numpy())
        results["sizes"].append(batch["sizes"].numpy())
        results["topk"].append(topk.numpy())
        results["topk_probs"].append(topk_probs.numpy())
        labels.append(batch_labels)
        ids.extend(i.decode() for i in batch["id"].numpy())
        progress.add(len(batch_labels))
    if not labels:
        raise ValueError(f"{source.description}: no images to evaluate")
    return Predictions(
        ranks=np.concatenate(results["ranks"]).astype(np.int32),
        sizes=np.concatenate(results["sizes"]).astype(np.int64),
        topk=np.concatenate(results["topk"]).astype(np.int32),
        topk_probs=np.concatenate(results["topk_probs"]).astype(np.float32),
        labels=np.concatenate(labels).astype(np.int32),
        qualities=np.array((0, *qualities), np.int32),
        ids=np.array(ids, dtype=str),
    )
