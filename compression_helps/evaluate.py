"""Classify every candidate of every image; store ranks, sizes and top-5.

SPEC.md ("Ranks"): the rank of the true label is 1 + the number of classes
with a strictly higher probability (1 = top-1); top-k correct iff
rank <= k. One model call per batch classifies all candidates of the batch's
images (B images -> B * V model inputs).

Runs are split into shards of consecutive images. Each finished shard is
written atomically to `<workdir>/shards/`, so an interrupted run resumes
where it stopped; batches never cross a shard, so a resumed run computes
exactly what an uninterrupted one does. An image that cannot be evaluated
(empty, corrupt, unknown label, ...) is skipped and recorded with its reason;
the run goes on.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from compression_helps import candidates, datasets, models
from compression_helps import workdir as workdir_lib

__all__ = [
    "PREDICTIONS_FILE",
    "SHARD_SIZE",
    "TOP_K",
    "Predictions",
    "classify_fn",
    "SkippedImage",
    "diagnose",
    "predict",
    "write_npz",
]

TOP_K = 5
PREDICTIONS_FILE = "predictions.npz"
SHARD_SIZE = 256  # Images per shard file: at most this much work is redone.
_SHARD_DIR = "shards"
# A fixed zip timestamp makes the same arrays give byte-identical files.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez` that is atomic and byte-for-byte reproducible.

    Args:
      path: output `.npz` path; replaced only once fully written.
      arrays: name -> array (no object arrays).
    """
    with workdir_lib.atomic_path(path) as tmp_path:
        with zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(
                    buffer, np.asarray(array), allow_pickle=False
                )
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                archive.writestr(info, buffer.getvalue())


@dataclasses.dataclass
class Predictions:
    """Per-image, per-candidate results (N images, V candidates).

    Attributes:
      ranks: `[N, V]` int32 rank of the true label (1 = top-1).
      sizes: `[N, V]` int64 candidate file sizes in bytes.
      topk: `[N, V, 5]` int32 top-5 class indices, most probable first.
      topk_probs: `[N, V, 5]` float32 their probabilities.
      labels: `[N]` int32 true class indices.
      qualities: `[V]` int32 JPEG QF of each candidate; 0 = the original,
        -1 = not standard JPEG (see `names`).
      ids: `[N]` str image ids (path relative to the data folder, or TFDS
        file name).
      names: `[V]` str candidate names: `original`, `qf100`, ...
      num_pixels: `[N]` int64 pixels (H * W) of each original, for bits per
        pixel.
    """

    ranks: np.ndarray
    sizes: np.ndarray
    topk: np.ndarray
    topk_probs: np.ndarray
    labels: np.ndarray
    qualities: np.ndarray
    ids: np.ndarray
    names: np.ndarray
    num_pixels: np.ndarray

    @property
    def num_images(self) -> int:
        """N."""
        return len(self.labels)

    def save(self, path: str) -> None:
        """Writes an `.npz` atomically; same results give the same bytes."""
        write_npz(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str) -> Predictions:
        """Reads a file written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                **{f.name: data[f.name] for f in dataclasses.fields(cls)}
            )

    @classmethod
    def concatenate(cls, parts: Sequence[Predictions]) -> Predictions:
        """Joins results of consecutive image ranges (same candidates)."""
        fields = {}
        for f in dataclasses.fields(cls):
            if f.name in ("qualities", "names"):
                fields[f.name] = getattr(parts[0], f.name)
            else:
                fields[f.name] = np.concatenate(
                    [getattr(p, f.name) for p in parts]
                )
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class SkippedImage:
    """An image that could not be evaluated, and why.

    Attributes:
      id: the example id.
      path: its file, or source and id.
      reason: `<kind>: <detail>`; kinds: empty file, no ImageNet label,
        unreadable file, cannot decode.
    """

    id: str
    path: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason without its detail, for counting."""
        return self.reason.split(":", 1)[0]


def classify_fn(
    classifier: models.Classifier, batch_size: int, jit_compile: bool = False
):
    """The compiled model step of the evaluation.

    Args:
      classifier: the model and its normalisation.
      batch_size: images per call; smaller batches are padded to it.
      jit_compile: compile the step with XLA (for GPUs/TPUs).

    Returns:
      `(pixels [b, V, S, S, 3] uint8, labels [b] int32) -> (ranks [b, V],
      topk [b, V, 5], topk_probs [b, V, 5])`.
    """
    model = classifier.model

    @tf.function(jit_compile=jit_compile)
    def classify(pixels: tf.Tensor, labels: tf.Tensor):
        # pixels: [b, V, S, S, 3] uint8 with b <= batch_size; labels: [b].
        # Padding every call to batch_size makes each image's outputs
        # independent of how many others share its batch (the kernels a
        # backend picks can depend on the batch size), so sharded, resumed
        # and tf.data-service runs give identical numbers.
        count = tf.shape(pixels)[0]
        pad = batch_size - count
        pixels = tf.pad(pixels, [[0, pad], [0, 0], [0, 0], [0, 0], [0, 0]])
        labels = tf.pad(labels, [[0, pad]])
        shape = tf.shape(pixels)
        flat = tf.reshape(pixels, tf.concat([[-1], shape[2:]], 0))
        inputs = classifier.preprocess_input(tf.cast(flat, tf.float32))
        # float32 also under a mixed-precision policy.
        probs = tf.cast(model(inputs, training=False), tf.float32)  # [B*V, C]
        probs = tf.reshape(probs, [shape[0], shape[1], -1])  # [B, V, C]
        one_hot = tf.one_hot(labels, tf.shape(probs)[-1], dtype=probs.dtype)
        true_prob = tf.reduce_sum(probs * one_hot[:, None, :], -1)  # [B, V]
        higher = tf.cast(probs > true_prob[..., None], tf.int32)
        ranks = 1 + tf.reduce_sum(higher, -1)
        top = tf.math.top_k(probs, TOP_K)
        return ranks[:count], top.indices[:count], top.values[:count]

    return classify


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    line = message.strip().splitlines()[0] if message.strip() else repr(error)
    # Drop TF's op-location decorations: "{{function_node ...}} " in front,
    # " [Op:...]" behind; the reason is the library's own message.
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
    return line.split(" [Op:")[0].strip()


def diagnose(
    source: datasets.Source,
    index: int,
    work: Callable[[dict[str, tf.Tensor]], Any],
    require_label: bool = True,
) -> SkippedImage | None:
    """Re-runs one example's work eagerly; why it fails, or None if it works.

    Pipelines drop failing examples (`Dataset.ignore_errors`) to keep going;
    this finds the reason for each one they dropped.

    Args:
      source: the examples.
      index: the example's index in `source`.
      work: the per-example function of the pipeline; raises on bad input.
      require_label: an unknown label (-1) is a reason to skip.

    Returns:
      The skip record, or None when the example does not fail.
    """
    try:
        example = next(iter(source.read(index, index + 1)))
    except (tf.errors.OpError, StopIteration) as e:
        name = f"#{index}"
        reason = f"unreadable file: {_first_line(e)}"
        return SkippedImage(name, source.path_of(name), reason)
    image_id = example["id"].numpy().decode()
    path = source.path_of(image_id)
    if require_label and int(example["label"]) < 0:
        reason = "no ImageNet label: the file name has no known wnid"
        return SkippedImage(image_id, path, reason)
    if len(example["image_bytes"].numpy()) == 0:
        return SkippedImage(image_id, path, "empty file: 0 bytes")
    try:
        work(example)
    except tf.errors.OpError as e:
        return SkippedImage(image_id, path, f"cannot decode: {_first_line(e)}")
    return None


def _unexplained(source: datasets.Source, index: int) -> SkippedImage:
    # Dropped in tf.data but fine when re-run alone (e.g. out of memory).
    name = f"#{index}"
    return SkippedImage(name, source.path_of(name), "failed: in tf.data only")


def _shard_path(workdir: str, start: int) -> str:
    return os.path.join(workdir, _SHARD_DIR, f"shard-{start:09d}.npz")


def _save_shard(path: str, part: Predictions | None, skipped) -> None:
    arrays = dataclasses.asdict(part) if part is not None else {}
    arrays["skipped"] = np.array(
        [[s.id, s.path, s.reason] for s in skipped], dtype=str
    ).reshape(-1, 3)
    write_npz(path, arrays)


def _load_shard(path: str) -> tuple[Predictions | None, list[SkippedImage]]:
    with np.load(path, allow_pickle=False) as data:
        skipped = [SkippedImage(*row) for row in data["skipped"].tolist()]
        if "ranks" not in data:
            return None, skipped
        names = [f.name for f in dataclasses.fields(Predictions)]
        return Predictions(**{n: data[n] for n in names}), skipped


def predict(
    classifier: models.Classifier,
    source: datasets.Source,
    qualities: Sequence[int | candidates.Codec] = candidates.QUALITIES,
    batch_size: int = 8,
    workdir: str | None = None,
    resume: bool = False,
    shard_size: int = SHARD_SIZE,
    data_service: str | None = None,
    jit_compile: bool = False,
    verbose: bool = True,
) -> tuple[Predictions, list[SkippedImage]]:
    """Evaluates every candidate of every image of `source`.

    Args:
      classifier: the model and its preprocessing.
      source: labelled examples.
      qualities: candidates 1..V-1, JPEG QFs or `candidates.Codec`s
        (candidate 0 is the original).
      batch_size: images per model call.
      workdir: where finished shards are kept (None: in memory only).
      resume: reuse the finished shards in `workdir` (same configuration).
      shard_size: images per shard.
      data_service: tf.data service dispatcher address: the JPEG work runs on
        its workers (see `candidates.candidate_batches`).
      jit_compile: compile the model step with XLA.
      verbose: show a progress bar.

    Returns:
      The `Predictions` of the evaluated images, in the order of `source`,
      and the skipped images.

    Raises:
      ValueError: no image could be evaluated.
    """
    codecs = candidates.as_codecs(qualities)
    num_examples = source.num_examples
    if num_examples is None:
        num_examples = int(source.dataset.reduce(0, lambda n, _: n + 1))
    if workdir is not None:
        shard_dir = os.path.join(workdir, _SHARD_DIR)
        if not resume:
            shutil.rmtree(shard_dir, ignore_errors=True)
        os.makedirs(shard_dir, exist_ok=True)

    def example_fn(example):  # Eager re-run of one example's work.
        return candidates.make_candidates(example, classifier.resize, codecs)

    def shard_batches(start: int, stop: int) -> tf.data.Dataset:
        # Unlabelled images are dropped here and recorded by `diagnose`.
        examples = source.read(start, stop).filter(lambda e: e["label"] >= 0)
        return candidates.candidate_batches(
            examples,
            classifier.resize,
            codecs,
            batch_size,
            data_service=data_service,
            job_name=f"evaluate-{uuid.uuid4().hex}" if data_service else None,
        )

    classify = classify_fn(classifier, batch_size, jit_compile)
    progress = keras.utils.Progbar(
        num_examples, unit_name="image", verbose=1 if verbose else 0
    )
    parts, skipped = [], []
    for start in range(0, num_examples, shard_size):
        stop = min(start + shard_size, num_examples)
        path = _shard_path(workdir, start) if workdir else None
        if path and os.path.exists(path):
            part, shard_skipped = _load_shard(path)
        else:
            part = _evaluate_batches(shard_batches(start, stop), classify)
            done = set() if part is None else set(part.pop("index").tolist())
            missing = sorted(set(range(start, stop)) - done)
            shard_skipped = [
                diagnose(source, i, example_fn) or _unexplained(source, i)
                for i in missing
            ]
            part = None if part is None else Predictions(**part)
            if path:
                _save_shard(path, part, shard_skipped)
        if part is not None:
            parts.append(part)
        skipped.extend(shard_skipped)
        progress.add(stop - start)
    if not parts:
        raise ValueError(
            f"{source.description}: none of {num_examples} images could be "
            f"evaluated (first: {skipped[0].path}: {skipped[0].reason})"
        )
    predictions = Predictions.concatenate(parts)
    predictions.qualities = np.array(
        [0] + [c.quality for c in codecs], np.int32
    )
    predictions.names = np.array(["original"] + [c.name for c in codecs])
    return predictions, skipped


def _evaluate_batches(batches: tf.data.Dataset, classify) -> dict | None:
    """Model outputs of all batches, in example index order."""
    outputs = {
        k: []
        for k in (
            "index",
            "ranks",
            "sizes",
            "topk",
            "topk_probs",
            "labels",
            "num_pixels",
        )
    }
    ids = []
    for batch in batches:
        ranks, topk, topk_probs = classify(batch["pixels"], batch["label"])
        outputs["ranks"].append(ranks.numpy())
        outputs["topk"].append(topk.numpy())
        outputs["topk_probs"].append(topk_probs.numpy())
        outputs["sizes"].append(batch["sizes"].numpy())
        outputs["labels"].append(batch["label"].numpy())
        outputs["num_pixels"].append(batch["num_pixels"].numpy())
        outputs["index"].append(batch["index"].numpy())
        ids.extend(i.decode() for i in batch["id"].numpy())
    if not ids:
        return None
    arrays = {k: np.concatenate(v) for k, v in outputs.items()}
    arrays["ids"] = np.array(ids, dtype=str)
    order = np.argsort(arrays["index"], kind="stable")
    dtypes = {
        "ranks": np.int32,
        "sizes": np.int64,
        "topk": np.int32,
        "topk_probs": np.float32,
        "labels": np.int32,
        "num_pixels": np.int64,
    }
    result = {
        k: v[order].astype(dtypes.get(k, v.dtype)) for k, v in arrays.items()
    }
    # Set by `predict`.
    result["qualities"] = np.zeros([0], np.int32)
    result["names"] = np.zeros([0], str)
    return result
