"""Parametric families of quantization table pairs, for `fit` to search.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

Not in the paper: DeepN-JPEG derives one table pair from the images' band
statistics (Sec. 3.3); these families open that design, and standard JPEG,
to a search (`deepn_jpeg.fit`). Each maps a parameter vector and a common
scale (the byte-budget factor) to a (luma, chroma) pair of baseline 8-bit
tables:

- "plm": the PLM of Sec. 3.3 ("monotone" variant, a = 255, continuous at
  T1 and T2) of the luma and the pooled Cb/Cr band std of the fit images,
  with free T1, T2, k1, k2, k3, Qmin and a chroma-to-luma scale ratio
  (with the common scale: separate luma and chroma scales).
- "standard": the Annex K tables, each tilted along the frequency diagonal
  (step * exp(tilt * ((u + v) / 14 - 1/2))), with a chroma-to-luma scale
  ratio.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from deepn_jpeg import statistics, tables

__all__ = ["FAMILIES", "Family", "make_family"]

FAMILIES = ("plm", "standard")
# A band's distance from DC along the diagonal, 0 (DC) .. 1 (highest).
_DIAGONAL = np.add.outer(np.arange(8), np.arange(8)) / 14.0


@dataclasses.dataclass(frozen=True)
class Family:
    """A parametric family of (luma, chroma) table pairs.

    Attributes:
      name: family name (`FAMILIES`).
      param_names: the searched parameters.
      start: the unfitted design's parameters.
      lower: lower bounds.
      upper: upper bounds.
      shape: `(params [P], scale) -> (luma, chroma)`, `[8, 8]` int32 each;
        `scale` multiplies both tables before rounding (the budget factor).
    """

    name: str
    param_names: tuple[str, ...]
    start: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    shape: Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]

    def from_unit(self, unit: Sequence[float]) -> np.ndarray:
        """[0, 1]^P (the optimiser's box) -> parameters within the bounds."""
        lower, upper = np.array(self.lower), np.array(self.upper)
        return lower + np.clip(unit, 0.0, 1.0) * (upper - lower)

    def to_unit(self, params: Sequence[float]) -> np.ndarray:
        """Parameters -> [0, 1]^P."""
        lower, upper = np.array(self.lower), np.array(self.upper)
        return (np.asarray(params, np.float64) - lower) / (upper - lower)


def _plm_family(stats: statistics.BandStatistics) -> Family:
    luma_std, chroma_std = stats.std("luma"), stats.std("chroma")
    p = tables.PAPER_PARAMS

    def shape(x, scale):
        log_chroma_ratio, t1, t2, k1, k2, k3, q_min = map(float, x)
        # b makes the mapping continuous at T1 (as the defaults are); the
        # "monotone" variant makes it continuous at T2. The PLM is linear in
        # (a, b, k1..k3, Qmin), so scaling them scales the steps.
        b = p.a - (k1 - k2) * t1

        # The parameters that scale the steps.
        linear = dict(a=p.a, b=b, k1=k1, k2=k2, k3=k3, q_min=q_min)

        def mapped(std, factor):
            scaled = {k: v * factor for k, v in linear.items()}
            return tables.plm(std, "monotone", t1=t1, t2=max(t1, t2), **scaled)

        return (
            mapped(luma_std, scale),
            mapped(chroma_std, scale * math.exp(log_chroma_ratio)),
        )

    return Family(
        name="plm",
        param_names=("log_chroma_ratio", "t1", "t2", "k1", "k2", "k3", "q_min"),
        start=(0.0, p.t1, p.t2, p.k1, p.k2, p.k3, p.q_min),
        lower=(-4.0, 1.0, 5.0, 0.0, 0.0, 0.0, 1.0),
        upper=(2.0, 60.0, 200.0, 20.0, 5.0, 10.0, 40.0),
        shape=shape,
    )


def _standard_family() -> Family:
    def shape(x, scale):
        log_chroma_ratio, luma_tilt, chroma_tilt = map(float, x)
        luma = tables.STANDARD_LUMA_QTABLE * np.exp(
            luma_tilt * (_DIAGONAL - 0.5)
        )
        chroma = tables.STANDARD_CHROMA_QTABLE * np.exp(
            log_chroma_ratio + chroma_tilt * (_DIAGONAL - 0.5)
        )
        # Round half up into baseline 8-bit steps, as `tables.plm`.
        return tuple(
            np.clip(np.floor(scale * t + 0.5), 1, 255).astype(np.int32)
            for t in (luma, chroma)
        )

    return Family(
        name="standard",
        param_names=("log_chroma_ratio", "luma_tilt", "chroma_tilt"),
        start=(0.0, 0.0, 0.0),
        lower=(-3.0, -3.0, -3.0),
        upper=(3.0, 3.0, 3.0),
        shape=shape,
    )


def make_family(
    name: str, stats: statistics.BandStatistics | None = None
) -> Family:
    """A table family by name.

    Args:
      name: one of `FAMILIES`.
      stats: band statistics of the fit images (needed by "plm").

    Returns:
      The `Family`. At its start and scale 1, "plm" gives the DeepN-JPEG
      "monotone" tables of `stats` and "standard" the QF 50 tables.

    Raises:
      ValueError: unknown name, or "plm" without statistics.
    """
    if name == "plm":
        if stats is None:
            raise ValueError("the plm family needs band statistics")
        return _plm_family(stats)
    if name == "standard":
        return _standard_family()
    raise ValueError(f"family must be one of {FAMILIES}, got {name!r}")
