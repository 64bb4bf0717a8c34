"""The one rule for holding images out, and the splits made with it.

Jobs that learn something from images (DeepN-JPEG table statistics, a table
search, training) never see the images they are evaluated on. Every such
split is `heldout_mask`: the last k indices of a seeded permutation.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = [
    "SPLITS",
    "check_part",
    "fold_mask",
    "heldout_mask",
    "holdout",
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
