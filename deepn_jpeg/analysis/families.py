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
- "sensitivity": the same tilts and ratio around the model's sensitivity
  tables (`deepn_jpeg.sensitivity`), plus a contrast exponent: each table
  is raised to it (about its geometric mean), so 1 keeps the rate-distortion
  rule's step ~ s^-1/2 and other values sharpen or flatten it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from deepn_jpeg.analysis import statistics
from deepn_jpeg.jpeg import tables

__all__ = ["FAMILIES", "Family", "make_family"]

FAMILIES = ("plm", "standard", "sensitivity")
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


def _tilted_family(
    name: str, luma: np.ndarray, chroma: np.ndarray, with_exponent: bool
) -> Family:
    """Tilts and a chroma ratio (and a contrast exponent) around two tables."""
    base = [np.asarray(t, np.float64) for t in (luma, chroma)]
    log_means = [np.log(t).mean() for t in base]

    def shape(x, scale):
        log_chroma_ratio, luma_tilt, chroma_tilt = map(float, x[:3])
        shaped = base
        if with_exponent:
            # About each table's geometric mean: the exponent changes the
            # spread of the steps and leaves their level to `scale`.
            shaped = [
                np.exp(m + float(x[3]) * (np.log(t) - m))
                for t, m in zip(base, log_means, strict=True)
            ]
        tilted = (
            shaped[0] * np.exp(luma_tilt * (_DIAGONAL - 0.5)),
            shaped[1]
            * np.exp(log_chroma_ratio + chroma_tilt * (_DIAGONAL - 0.5)),
        )
        # Round half up into baseline 8-bit steps, as `tables.plm`.
        return tuple(
            np.clip(np.floor(scale * t + 0.5), 1, 255).astype(np.int32)
            for t in tilted
        )

    # (name, start, lower, upper) of each parameter.
    params = (
        ("log_chroma_ratio", 0.0, -3.0, 3.0),
        ("luma_tilt", 0.0, -3.0, 3.0),
        ("chroma_tilt", 0.0, -3.0, 3.0),
    ) + ((("exponent", 1.0, 0.25, 2.0),) if with_exponent else ())
    names, start, lower, upper = zip(*params, strict=True)
    return Family(
        name=name,
        param_names=names,
        start=start,
        lower=lower,
        upper=upper,
        shape=shape,
    )


def make_family(
    name: str,
    stats: statistics.BandStatistics | None = None,
    sensitivity_tables: tuple[np.ndarray, np.ndarray] | None = None,
) -> Family:
    """A table family by name.

    Args:
      name: one of `FAMILIES`.
      stats: band statistics of the fit images (needed by "plm").
      sensitivity_tables: (luma, chroma) from the fit images' sensitivities
        (needed by "sensitivity").

    Returns:
      The `Family`. At its start and scale 1, "plm" gives the DeepN-JPEG
      "monotone" tables of `stats`, "standard" the QF 50 tables and
      "sensitivity" `sensitivity_tables`.

    Raises:
      ValueError: unknown name, or a family without what it starts from.
    """
    if name == "plm":
        if stats is None:
            raise ValueError("the plm family needs band statistics")
        return _plm_family(stats)
    if name == "standard":
        return _tilted_family(
            name,
            tables.STANDARD_LUMA_QTABLE,
            tables.STANDARD_CHROMA_QTABLE,
            with_exponent=False,
        )
    if name == "sensitivity":
        if sensitivity_tables is None:
            raise ValueError(
                "the sensitivity family needs sensitivity tables "
                "(sensitivity_tables: a measure_sensitivity.py workdir)"
            )
        return _tilted_family(name, *sensitivity_tables, with_exponent=True)
    raise ValueError(f"family must be one of {FAMILIES}, got {name!r}")
