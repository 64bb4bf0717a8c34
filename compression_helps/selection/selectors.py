"""Candidate selectors with and without the true label.

SPEC.md, "Highest Rank Selector" and "Selectors without the label". Pure
numpy. Candidate 0 is the original. Each selector returns the chosen
candidate index per image, an int array `[N]`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "confident",
    "fixed",
    "highest_rank",
    "keep_top1",
    "keep_top1_and_top5",
    "keep_top5",
]


def highest_rank(ranks: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Highest Rank Selector (HRS) of Yang et al. 2021, Sec. 3.

    The candidate with the smallest rank of the true label; ties go to the
    smallest file (then to the lower index). For every k no selector has a
    higher top-k accuracy (SPEC.md, "Highest Rank Selector").

    Args:
      ranks: `[N, V]` rank of the true label per candidate (1 = top-1).
      sizes: `[N, V]` candidate sizes in bytes.

    Returns:
      `[N]` int chosen candidate indices.
    """
    # lexsort: last key is primary; the sort is stable, so full ties keep
    # the lower index.
    return np.lexsort((sizes, ranks), axis=-1)[:, 0]


def _smallest_qualifying(
    qualifies: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """Smallest candidate where `qualifies`; the original where none does."""
    masked = np.where(qualifies, sizes, np.iinfo(np.int64).max)
    chosen = np.argmin(masked, axis=-1)
    return np.where(qualifies.any(axis=-1), chosen, 0)


def _same_top1(topk: np.ndarray) -> np.ndarray:
    return topk[:, :, 0] == topk[:, :1, 0]


def _same_top5(topk: np.ndarray) -> np.ndarray:
    ordered = np.sort(topk, axis=-1)
    return (ordered == ordered[:, :1]).all(axis=-1)


def keep_top1(topk: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The smallest candidate whose top-1 label equals the original's.

    SPEC.md ("Selectors without the label"): keeps top-1 accuracy exactly.

    Args:
      topk: `[N, V, K]` predicted classes, most probable first.
      sizes: `[N, V]` candidate sizes in bytes.

    Returns:
      `[N]` int chosen candidate indices.
    """
    return _smallest_qualifying(_same_top1(topk), sizes)


def keep_top5(topk: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The smallest candidate whose top-5 set equals the original's.

    SPEC.md ("Selectors without the label"): keeps top-5 accuracy exactly.

    Args:
      topk: `[N, V, 5]` predicted classes.
      sizes: `[N, V]` candidate sizes in bytes.

    Returns:
      `[N]` int chosen candidate indices.
    """
    return _smallest_qualifying(_same_top5(topk), sizes)


def keep_top1_and_top5(topk: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The smallest candidate keeping both the top-1 label and top-5 set.

    SPEC.md ("Selectors without the label"): keeps both accuracies exactly.

    Args:
      topk: `[N, V, 5]` predicted classes, most probable first.
      sizes: `[N, V]` candidate sizes in bytes.

    Returns:
      `[N]` int chosen candidate indices.
    """
    return _smallest_qualifying(_same_top1(topk) & _same_top5(topk), sizes)


def fixed(index: int, n: int) -> np.ndarray:
    """Always candidate `index` (0 = original, 1 = the first QF, ...)."""
    return np.full(n, index, dtype=np.int64)


def confident(
    topk: np.ndarray,
    topk_probs: np.ndarray,
    sizes: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """Confidence selector (SPEC.md, "Selectors without the label", extra).

    The smallest candidate whose top-1 label equals the original's and whose
    top-1 probability is at least `threshold`; the original if none is.

    Args:
      topk: `[N, V, K]` predicted classes, most probable first.
      topk_probs: `[N, V, K]` their probabilities.
      sizes: `[N, V]` candidate sizes in bytes.
      threshold: minimum top-1 probability, in [0, 1].

    Returns:
      `[N]` int chosen candidate indices.
    """
    qualifies = _same_top1(topk) & (topk_probs[:, :, 0] >= threshold)
    return _smallest_qualifying(qualifies, sizes)
