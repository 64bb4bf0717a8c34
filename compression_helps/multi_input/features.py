"""Pooled backbone features of every candidate, computed once and cached.

SPEC.md ("Multi-input model") freezes the backbone, so its features never
change during training: one backbone pass per candidate image
(`compute_features`) makes every epoch cost only the head
(`network.build_head`). `cache_features` keeps them in an `.npz` file
(`FEATURES_FILE` of the training run) together with a key naming everything
they depend on, so a stale cache (other images, backbone, weights or QFs)
is never reused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from compression_helps.core import files, progress
from compression_helps.engine import candidates
from compression_helps.multi_input import distribute, network

__all__ = [
    "FEATURES_FILE",
    "cache_features",
    "compute_features",
    "features_key",
    "read_cache",
]

FEATURES_FILE = "features.npz"
# Raise when the arrays or their meaning change: old caches become stale.
_FEATURES_VERSION = 2


def compute_features(
    model: keras.Model,
    dataset: tf.data.Dataset,
    resize: Callable[[tf.Tensor], tf.Tensor],
    qualities: Sequence[int | candidates.Codec] = candidates.QUALITIES,
    batch_size: int = 32,
    data_service: str | None = None,
    verbose: bool = True,
    num_examples: int | None = None,
) -> dict[str, np.ndarray]:
    """One pass of the backbone per candidate over a data set.

    Args:
      model: a `network.build_multi_input_model` model.
      dataset: example dicts (see `datasets`).
      resize: the backbone's crop and resize.
      qualities: JPEG QFs of candidates 1..V-1 (as for `model`).
      batch_size: images per backbone call (the backbone sees each
        candidate's batch in turn).
      data_service: tf.data service dispatcher whose workers do the JPEG
        work (see `candidates.candidate_batches`).
      verbose: show the progress.
      num_examples: how many examples `dataset` holds (for the progress;
        its cardinality is unknown once filtered).

    Returns:
      `{"features": [N, V, F] float32, "labels": [N] int32, "index": [N]
      int64, "ids": [N] str}` for the images that decoded, in `index` order
      (whatever order the batches came in); files the source's guard
      refused (`error`) are left out undecoded, like undecodable ones.
    """
    extract = network.features_model(model)
    names = network.input_names(qualities)
    batches = candidates.candidate_batches(
        dataset,
        resize,
        qualities,
        batch_size=batch_size,
        data_service=data_service,
    )
    if num_examples is None:
        total = int(dataset.cardinality())
        num_examples = total if total >= 0 else None  # < 0: unknown.
    features, labels, index, ids = [], [], [], []
    with progress.Progress(
        num_examples, "image", "backbone features", verbose=verbose
    ) as shown:
        for batch in batches:
            inputs = network.to_inputs(batch, names)
            features.append(distribute.predict_batch(extract, inputs))
            labels.append(batch["label"].numpy())
            index.append(batch["index"].numpy())
            ids.extend(i.decode() for i in batch["id"].numpy())
            shown.add(len(labels[-1]))
    if not features:
        num_features = int(extract.output.shape[-1])
        features = [np.zeros((0, len(names), num_features), np.float32)]
        labels, index = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
    index = np.concatenate(index).astype(np.int64)
    order = np.argsort(index, kind="stable")
    return {
        "features": np.concatenate(features).astype(np.float32)[order],
        "labels": np.concatenate(labels).astype(np.int32)[order],
        "index": index[order],
        "ids": np.array(ids, dtype=str)[order],
    }


def features_key(
    qualities: Sequence[int | candidates.Codec], **depends_on: object
) -> str:
    """The cache key: what a features file was computed from, as JSON.

    Args:
      qualities: JPEG QFs of candidates 1..V-1.
      **depends_on: everything else the features depend on, JSON-
        serialisable: the backbone and its weights (and their files'
        hashes), the image size, the data settings and the data's
        fingerprint (`datasets.Source.fingerprint`).

    Returns:
      A canonical JSON string.
    """
    return json.dumps(
        {
            "version": _FEATURES_VERSION,
            "inputs": list(network.input_names(qualities)),
            **depends_on,
        },
        sort_keys=True,
    )


def read_cache(path: str | None, key: str) -> dict[str, np.ndarray] | None:
    """The features cached at `path` for `key`, or None.

    None also for a file made for another key or a damaged one (with a
    warning): the caller computes them again.

    Args:
      path: a features file, or None (no cache).
      key: `features_key(...)` of the features wanted.

    Returns:
      See `compute_features`.
    """
    if path is None:
        return None
    try:
        cached = files.read_npz(path)
    except FileNotFoundError:
        return None
    except ValueError as e:  # Damaged: computed again, and replaced.
        logging.warning("%s; computing the features again", e)
        return None
    if str(cached.get("key")) != key:
        logging.warning(
            "%s: features of other images, backbone or QFs (%s, not %s): "
            "computing them again",
            path,
            cached.get("key"),
            key,
        )
        return None
    logging.info("Reusing cached features %s", path)
    return {k: v for k, v in cached.items() if k != "key"}


def cache_features(
    path: str | None,
    model: keras.Model,
    dataset: tf.data.Dataset,
    resize: Callable[[tf.Tensor], tf.Tensor],
    qualities: Sequence[int | candidates.Codec] = candidates.QUALITIES,
    batch_size: int = 32,
    key: str | None = None,
    data_service: str | None = None,
    verbose: bool = True,
    write: bool = True,
    num_examples: int | None = None,
) -> dict[str, np.ndarray]:
    """`compute_features`, saved to (and next time read from) an .npz file.

    Args:
      path: the .npz file, e.g. `run.path(FEATURES_FILE)`; None: no cache
        (compute, do not read).
      model: a `network.build_multi_input_model` model with a frozen
        backbone.
      dataset: example dicts.
      resize: the backbone's crop and resize.
      qualities: JPEG QFs of candidates 1..V-1.
      batch_size: images per backbone call.
      key: `features_key(...)` of what the features depend on; a file made
        with another key (or a damaged one) is computed again. None: the
        QFs only.
      data_service: see `compute_features`.
      verbose: see `compute_features`.
      write: write the computed features (atomically); False for processes
        that must not write (the non-chief workers of a multi-worker run).
      num_examples: see `compute_features`.

    Returns:
      See `compute_features`.

    Raises:
      ValueError: the backbone is trainable (its features would change
        during training).
    """
    if model.get_layer(network.BACKBONE_LAYER).trainable:
        raise ValueError("cached features need a frozen backbone")
    key = key or features_key(qualities)
    cached = read_cache(path, key)
    if cached is not None:
        return cached
    arrays = compute_features(
        model,
        dataset,
        resize,
        qualities,
        batch_size,
        data_service,
        verbose,
        num_examples,
    )
    if write and path is not None:
        files.write_npz(path, {"key": np.array(key), **arrays})
    return arrays
