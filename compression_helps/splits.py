"""The one rule for holding images out, and the splits made with it.

Jobs that learn something from images (DeepN-JPEG table statistics, a table
search, training) never see the images they are evaluated on. Every such
split is `heldout_mask`: the last k indices of a seeded permutation.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:  # Annotations only: datasets builds on this module.
    from compression_helps import datasets

__all__ = ["SPLITS", "heldout_mask", "holdout", "split"]

# `split` parts: every example, or one side of a seeded random halving.
SPLITS = ("all", "fit", "heldout")


def heldout_mask(num_examples: int, num_heldout: int, seed: int) -> np.ndarray:
    """Which of N examples are held out: a seeded random subset.

    The one split rule of the project (table statistics and search, and
    multi-input training, hold out images the same way): the last
    `num_heldout` indices of a `np.random.default_rng(seed)` permutation.

    Args:
      num_examples: N.
      num_heldout: how many are held out, in [0, N].
      seed: the permutation's seed.

    Returns:
      `[N]` bool, True for held-out examples.
    """
    permutation = np.random.default_rng(seed).permutation(num_examples)
    mask = np.zeros(num_examples, bool)
    mask[permutation[num_examples - num_heldout :]] = True
    return mask


def split(source: datasets.Source, part: str, seed: int = 0) -> datasets.Source:
    """One half of a seeded random split of a source's examples.

    Jobs that learn something from images (DeepN-JPEG table statistics, a
    table search) use the "fit" half; their evaluation uses the "heldout"
    half, which they never see. The rule depends only on the number of
    examples and the seed (`heldout_mask`): of a
    `np.random.default_rng(seed)` permutation of the indices, the first
    `N // 2` are "fit", the others "heldout". Each part keeps the source's
    order and is re-indexed from 0, so it can be sharded and resumed like any
    source.

    Args:
      source: examples with a known count.
      part: one of `SPLITS` ("all" returns `source` itself).
      seed: the permutation's seed.

    Returns:
      The part as a `Source`; its example `i` is the `i`-th (in source
      order) of the part's examples, with the same id, file and label.

    Raises:
      ValueError: unknown part, unknown or too few examples.
    """
    if part not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {part!r}")
    if part == "all":
        return source
    total = source.num_examples
    if total is None or total < 2:
        raise ValueError(
            f"{source.description}: cannot split {total} examples in two"
        )
    is_heldout = heldout_mask(total, total - total // 2, seed)
    wanted = is_heldout if part == "heldout" else ~is_heldout
    indices = np.flatnonzero(wanted).astype(np.int64)  # [M] source indices
    lookup = tf.constant(indices)

    def renumber(example):
        position = tf.searchsorted(
            lookup, example["index"][None], out_type=tf.int64
        )
        return {**example, "index": position[0]}

    def read_indices(positions: np.ndarray) -> tf.data.Dataset:
        wanted = indices[np.asarray(positions, np.int64)]
        return source.select(wanted).map(renumber)

    def read(start: int, stop: int | None) -> tf.data.Dataset:
        stop = len(indices) if stop is None else min(stop, len(indices))
        return read_indices(np.arange(start, max(start, stop)))

    known = source.known_labels
    # Same root and data identity; the part is in the run's settings.
    return dataclasses.replace(
        source,
        read=read,
        num_examples=len(indices),
        description=f"{source.description} ({part} half, seed {seed})",
        known_labels=None if known is None else known[indices],
        known_ids=None
        if source.known_ids is None
        else source.known_ids[indices],
        read_indices=read_indices,
    )


def holdout(
    num_examples: int,
    num_eval: int | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Which images training holds out: a seeded random subset.

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
    return heldout_mask(num_examples, num_eval, seed)
