"""Accuracy and compression ratio of a selection (SPEC.md)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "bits_per_pixel",
    "chosen_values",
    "compression_ratio",
    "topk_accuracy",
]


def chosen_values(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """`values[i, chosen[i]]` for every image i of a `[N, V]` array."""
    return np.take_along_axis(values, chosen[:, None], axis=1)[:, 0]


def topk_accuracy(ranks: np.ndarray, chosen: np.ndarray, k: int) -> float:
    """Top-k accuracy in percent (SPEC.md, "Ranks": correct iff rank <= k).

    Args:
      ranks: `[N, V]` rank of the true label per candidate.
      chosen: `[N]` chosen candidate per image.
      k: 1 for top-1, 5 for top-5.

    Returns:
      Percentage of images whose chosen candidate is top-k correct.
    """
    return float(100.0 * np.mean(chosen_values(ranks, chosen) <= k))


def compression_ratio(sizes: np.ndarray, chosen: np.ndarray) -> float:
    """SPEC.md ("Candidates and sizes"): sum of originals / sum of chosen.

    Not a mean of per-image ratios, and relative to the original files
    (candidate 0), not to QF 100.

    Args:
      sizes: `[N, V]` candidate sizes in bytes.
      chosen: `[N]` chosen candidate per image.

    Returns:
      The compression ratio of the selection.
    """
    return float(sizes[:, 0].sum() / chosen_values(sizes, chosen).sum())


def bits_per_pixel(
    sizes: np.ndarray, chosen: np.ndarray, num_pixels: np.ndarray
) -> float:
    """Bits of the chosen files per pixel of the originals, over the data set.

    Args:
      sizes: `[N, V]` candidate sizes in bytes.
      chosen: `[N]` chosen candidate per image.
      num_pixels: `[N]` pixels (H * W) of each original.

    Returns:
      8 * (sum of chosen bytes) / (sum of pixels).
    """
    return float(8 * chosen_values(sizes, chosen).sum() / num_pixels.sum())
