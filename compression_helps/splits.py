"""The one rule for holding images out, and the splits made with it.

Jobs that learn something from images (DeepN-JPEG table statistics, a table
search, training) never see the images they are evaluated on. Every such
split is `heldout_mask`: the last k indices of a seeded permutation.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:  # Annotations only: datasets builds on this module.
    from compression_helps import datasets

__all__ = [
    "SPLITS",
    "check_part",
    "fold_mask",
    "heldout_mask",
    "holdout",
    "sample",
    "split",
    "subset",
]

# `split` parts: every example, or one side of a seeded random halving.
# Cross-fitting adds "fit:<k>/<K>" (all but fold k of K) and
# "heldout:<k>/<K>" (fold k), k in 1..K.
SPLITS = ("all", "fit", "heldout")
_FOLD_PART = re.compile(r"(fit|heldout):([1-9][0-9]*)/([1-9][0-9]*)")


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


def fold_mask(
    num_examples: int, num_folds: int, fold: int, seed: int
) -> np.ndarray:
    """Which of N examples are in fold `fold` (1..K) of a seeded K-fold split.

    The folds are `np.array_split` of the same seeded permutation as
    `heldout_mask`, so every example is in exactly one fold and the folds'
    sizes differ by at most one.

    Args:
      num_examples: N.
      num_folds: K >= 2.
      fold: k in 1..K.
      seed: the permutation's seed.

    Returns:
      `[N]` bool, True for the fold's examples.
    """
    permutation = np.random.default_rng(seed).permutation(num_examples)
    mask = np.zeros(num_examples, bool)
    mask[np.array_split(permutation, num_folds)[fold - 1]] = True
    return mask


def check_part(part: str) -> tuple[str, int, int] | None:
    """Parses a `split` part; None for "all".

    Returns:
      (side, k, K): side "fit" or "heldout"; a halving is (side, 2, 2) of
      its own rule (`heldout_mask`), marked by k = 0.

    Raises:
      ValueError: an unknown part, or a fold outside 1..K, or K < 2.
    """
    if part == "all":
        return None
    if part in SPLITS:
        return part, 0, 2
    match = _FOLD_PART.fullmatch(part)
    if not match:
        raise ValueError(
            f"split must be one of {SPLITS}, or fit:<k>/<K> or "
            f"heldout:<k>/<K> (fold k of K), got {part!r}"
        )
    side, fold, num_folds = match[1], int(match[2]), int(match[3])
    if num_folds < 2 or fold > num_folds:
        raise ValueError(f"split {part!r}: need K >= 2 folds and k in 1..K")
    return side, fold, num_folds


def split(source: datasets.Source, part: str, seed: int = 0) -> datasets.Source:
    """One part of a seeded random split of a source's examples.

    Jobs that learn something from images (DeepN-JPEG table statistics, a
    table search) use the "fit" half; their evaluation uses the "heldout"
    half, which they never see. The rule depends only on the number of
    examples and the seed (`heldout_mask`): of a
    `np.random.default_rng(seed)` permutation of the indices, the first
    `N // 2` are "fit", the others "heldout". Each part is a `subset`.

    Args:
      source: examples with a known count.
      part: one of `SPLITS` ("all" returns `source` itself), or a
        cross-fitting part "heldout:<k>/<K>" (fold k of `fold_mask`) or
        "fit:<k>/<K>" (the other K-1 folds).
      seed: the permutation's seed.

    Returns:
      The part as a `Source`; its example `i` is the `i`-th (in source
      order) of the part's examples, with the same id, file and label.

    Raises:
      ValueError: unknown part, unknown or too few examples.
    """
    parsed = check_part(part)
    if parsed is None:
        return source
    side, fold, num_folds = parsed
    total = source.num_examples
    if total is None or total < num_folds:
        raise ValueError(
            f"{source.description}: cannot split {total} examples in "
            f"{num_folds}"
        )
    if fold:
        is_heldout = fold_mask(total, num_folds, fold, seed)
        name = f"{side} part of fold {fold}/{num_folds}"
    else:
        is_heldout = heldout_mask(total, total - total // 2, seed)
        name = f"{side} half"
    wanted = is_heldout if side == "heldout" else ~is_heldout
    return subset(source, np.flatnonzero(wanted), f"{name}, seed {seed}")


def sample(
    source: datasets.Source, size: int, seed: int = 0
) -> datasets.Source:
    """A seeded random subset of at most `size` of a source's examples.

    The same rule as the splits (`heldout_mask`), so a sample of a split
    part is reproducible from the settings alone.

    Args:
      source: examples with a known count.
      size: the most examples kept; a smaller source is returned whole.
      seed: the permutation's seed.

    Returns:
      The subset (`subset`), or `source` itself.

    Raises:
      ValueError: an unknown number of examples.
    """
    total = source.num_examples
    if total is None:
        raise ValueError(f"{source.description}: cannot sample, size unknown")
    if total <= size:
        return source
    chosen = np.flatnonzero(heldout_mask(total, size, seed))
    return subset(source, chosen, f"{size} sampled, seed {seed}")


def subset(
    source: datasets.Source, indices: np.ndarray, name: str
) -> datasets.Source:
    """The examples at sorted `indices` of a source, re-indexed from 0.

    The subset keeps the source's order and is re-indexed from 0, so it can
    be sharded and resumed like any source.

    Args:
      source: the examples.
      indices: `[M]` increasing source indices.
      name: what the subset is, appended to the source's description.

    Returns:
      The subset as a `Source`; its example `i` is the source's example
      `indices[i]`, with the same id, file and label.
    """
    indices = np.asarray(indices, np.int64)  # [M] source indices
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
    # Same root and data identity; the subset is in the run's settings.
    return dataclasses.replace(
        source,
        read=read,
        num_examples=len(indices),
        description=f"{source.description} ({name})",
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
