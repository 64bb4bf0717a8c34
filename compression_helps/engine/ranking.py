"""What the evaluation finds for each candidate, and the rank rule.

SPEC.md ("Ranks"): the rank of the true label is 1 + the number of classes
with a strictly higher probability (1 = top-1); top-k correct iff rank <= k.
`Predictions` holds, per image and candidate, the rank, the file size and
the top-5 answers; `accuracy` turns one candidate's column into top-1,
top-5 and the mean true-label probability, so every job's numbers come from
one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from compression_helps.core import files
from compression_helps.engine import metrics

__all__ = [
    "PREDICTIONS_FILE",
    "TOP_K",
    "Predictions",
    "accuracy",
    "ranks_of",
]

TOP_K = 5
PREDICTIONS_FILE = "predictions.npz"
# Per-candidate fields: the same for every image, not concatenated.
_CANDIDATE_FIELDS = ("curves", "qualities", "names")


@dataclasses.dataclass
class Predictions:
    """Per-image, per-candidate results (N images, V candidates).

    Attributes:
      ranks: `[N, V]` int32 rank of the true label (1 = top-1).
      sizes: `[N, V]` int64 candidate file sizes in bytes.
      topk: `[N, V, 5]` int32 top-5 class indices, most probable first.
      topk_probs: `[N, V, 5]` float32 their probabilities.
      labels: `[N]` int32 true class indices.
      curves: `[V]` str curve of each candidate: "original", "jpeg" (standard
        JPEG) or a table set's name (`candidates.Codec.curve`).
      qualities: `[V]` int32 quality factor of each candidate; 0 for the
        original.
      ids: `[N]` str image ids (path relative to the data folder, or TFDS
        file name).
      names: `[V]` str candidate names: `original`, `qf100`, `paper_q50`...
      num_pixels: `[N]` int64 pixels (H * W) of each original, for bits per
        pixel.
    """

    ranks: np.ndarray
    sizes: np.ndarray
    topk: np.ndarray
    topk_probs: np.ndarray
    labels: np.ndarray
    curves: np.ndarray
    qualities: np.ndarray
    ids: np.ndarray
    names: np.ndarray
    num_pixels: np.ndarray

    @property
    def num_images(self) -> int:
        """N."""
        return len(self.labels)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields by name, for `rundir.write_npz`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Predictions:
        """Inverse of `to_arrays` (extra arrays are ignored)."""
        return cls(**{f.name: arrays[f.name] for f in dataclasses.fields(cls)})

    @classmethod
    def load(cls, path: str) -> Predictions:
        """Reads a `predictions.npz`; a damaged one gives one line."""
        arrays = files.read_npz(path)
        missing = [
            f.name for f in dataclasses.fields(cls) if f.name not in arrays
        ]
        if missing:
            raise ValueError(
                f"{path}: not a predictions file of this version (no "
                f"{', '.join(missing)}); run again without --report_only"
            )
        return cls.from_arrays(arrays)

    def select(self, rows: np.ndarray) -> Predictions:
        """The images `rows` (e.g. a bootstrap resample), same candidates."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name)[rows]
                for f in dataclasses.fields(self)
                if f.name not in _CANDIDATE_FIELDS
            },
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Predictions]) -> Predictions:
        """Joins results of consecutive image ranges (same candidates)."""
        fields = {}
        for f in dataclasses.fields(cls):
            if f.name in _CANDIDATE_FIELDS:
                fields[f.name] = getattr(parts[0], f.name)
            else:
                fields[f.name] = np.concatenate(
                    [getattr(p, f.name) for p in parts]
                )
        return cls(**fields)


def accuracy(predictions: Predictions, candidate: int) -> dict[str, float]:
    """Top-1, top-5 and mean true-label probability of one candidate.

    The one place these are computed from results: the table search's
    trials (`deepn_jpeg.fit`) and the rate-accuracy curves
    (`deepn_jpeg.rate_accuracy`) both come from here.

    Args:
      predictions: results of N images.
      candidate: the column, 0..V-1.

    Returns:
      "top1" and "top5" (SPEC.md "Ranks", `metrics.topk_accuracy`) and
      "mean_prob", the mean probability of the true label counted as 0 where
      it is not in the top 5 (only the top 5 are kept); all in percent.
    """
    chosen = np.full(predictions.num_images, candidate)
    ranks = predictions.ranks[:, candidate]  # [N]
    # The r - 1 classes above rank r are strictly more probable, so the r-th
    # largest probability is the true label's own, also under ties.
    index = np.minimum(ranks, TOP_K)[:, None] - 1
    true_prob = np.take_along_axis(
        predictions.topk_probs[:, candidate], index, 1
    )[:, 0]
    true_prob = np.where(ranks <= TOP_K, true_prob, 0.0)
    return {
        "top1": metrics.topk_accuracy(predictions.ranks, chosen, 1),
        "top5": metrics.topk_accuracy(predictions.ranks, chosen, TOP_K),
        "mean_prob": 100.0 * float(np.mean(true_prob, dtype=np.float64)),
    }


def ranks_of(probabilities: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """SPEC.md ("Ranks"): 1 + the classes strictly more probable than the label.

    Ties count in the label's favour (unlike an arg-sort). TF ops, also on
    NumPy arrays (eagerly).

    Args:
      probabilities: `[..., C]`.
      labels: `[...]` true class indices in [0, C).

    Returns:
      `[...]` int32 ranks, 1 = top-1.
    """
    probabilities = tf.convert_to_tensor(probabilities)
    one_hot = tf.one_hot(
        labels, tf.shape(probabilities)[-1], dtype=probabilities.dtype
    )
    true_prob = tf.reduce_sum(probabilities * one_hot, -1)
    higher = tf.cast(probabilities > true_prob[..., None], tf.int32)
    return 1 + tf.reduce_sum(higher, -1)
