"""Quantization tables: DeepN-JPEG's PLM, standard JPEG, IJG scaling, files.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

The piece-wise linear mapping (PLM, Sec. 3.3) turns each band's DCT standard
deviation (`deepn_jpeg.statistics`) into a quantization step. Its parameter
values ("paper" defaults) come from a public re-implementation and are not
confirmed against the paper's text; they make the step jump up at T2 (20 just
below, 60 just above), so the "monotone" variant removes that jump.

The table checks and files (JSON table sets with the subsampling and encoder
they may fix, shipped sets loaded by name) live in `deepn_jpeg.tables_io`,
the `cjpeg -qtables` text in `cjpeg_text`; this module re-exports them, so
`tables.load_json`, `tables.TableSet`, `tables.load_tableset`, ... are the
names to use.

Every table here is `[8, 8]` in natural (row-major, not zigzag) order, row =
vertical frequency: the order of Pillow's `qtables=` and `Image.quantization`,
libjpeg's `jpeg_add_quant_table` and `cjpeg -qtables` files.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from deepn_jpeg.jpeg import cjpeg_text, tables_io

__all__ = [
    "PAPER_PARAMS",
    "PLM_VARIANTS",
    "STANDARD_CHROMA_QTABLE",
    "STANDARD_LUMA_QTABLE",
    "PlmParams",
    "TableSet",
    "format_qtable",
    "from_json",
    "ijg_scale_factor",
    "load_json",
    "load_tableset",
    "monotone_c",
    "plm",
    "qtables_filename",
    "read_cjpeg_qtables",
    "save_json",
    "scale_qtable",
    "shipped_names",
    "standard_qtables",
    "tables_file_problem",
    "tableset_file",
    "tableset_from_json",
    "to_cjpeg_qtables",
    "to_json",
    "validate_qtable",
    "write_cjpeg_qtables",
]

# Re-exported from `tables_io` and `cjpeg_text` (one definition each).
TableSet = tables_io.TableSet
format_qtable = tables_io.format_qtable
from_json = tables_io.from_json
load_json = tables_io.load_json
load_tableset = tables_io.load_tableset
qtables_filename = tables_io.qtables_filename
read_cjpeg_qtables = cjpeg_text.read_cjpeg_qtables
save_json = tables_io.save_json
shipped_names = tables_io.shipped_names
tables_file_problem = tables_io.tables_file_problem
tableset_file = tables_io.tableset_file
tableset_from_json = tables_io.tableset_from_json
to_cjpeg_qtables = cjpeg_text.to_cjpeg_qtables
to_json = tables_io.to_json
validate_qtable = tables_io.validate_qtable
write_cjpeg_qtables = cjpeg_text.write_cjpeg_qtables

# ITU-T T.81 (JPEG) Annex K, Tables K.1 and K.2, natural order.
STANDARD_LUMA_QTABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int32,
)
STANDARD_CHROMA_QTABLE = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ],
    dtype=np.int32,
)
PLM_VARIANTS = ("paper", "monotone")


@dataclasses.dataclass(frozen=True)
class PlmParams:
    """Parameters of the PLM, Sec. 3.3 of DeepN-JPEG (see `plm`).

    Attributes:
      a: intercept of the first segment (delta <= t1).
      b: intercept of the second segment (t1 < delta <= t2).
      c: intercept of the third segment (delta > t2); the "monotone"
        variant derives its own (`monotone_c`).
      t1: first breakpoint (a std).
      t2: second breakpoint.
      k1: slope magnitude of the first segment.
      k2: slope magnitude of the second segment.
      k3: slope magnitude of the third segment.
      q_min: smallest step the mapping gives.
    """

    # Flags are --plm_a, --plm_b, ... (`experiments.common.ConfigFlags`).
    FLAG_PREFIX: ClassVar[str] = "plm_"

    a: float = 255.0
    b: float = 80.0
    c: float = 240.0
    t1: float = 20.0
    t2: float = 60.0
    k1: float = 9.75
    k2: float = 1.0
    k3: float = 3.0
    q_min: float = 5.0


# The "paper" defaults of SPEC.md (from a public re-implementation).
PAPER_PARAMS = PlmParams()


def monotone_c(params: PlmParams) -> float:
    """The `c` that makes the PLM's third segment continuous at T2.

    b - k2*T2 = c - k3*T2, so c = b + (k3 - k2)*T2 (200 for the defaults,
    instead of 240).

    Args:
      params: the PLM parameters (their `c` is not used).

    Returns:
      The third segment's intercept of the "monotone" variant.
    """
    return params.b + (params.k3 - params.k2) * params.t2


def plm(std: Any, variant: str = "paper", **params: float) -> np.ndarray:
    """Piece-wise linear mapping (PLM) of DeepN-JPEG, Sec. 3.3: std -> step.

    With delta a band's standard deviation:

        Q = a - k1*delta   if delta <= T1
        Q = b - k2*delta   if T1 < delta <= T2
        Q = c - k3*delta   if delta > T2
        Q = max(Q, Qmin), rounded to the nearest integer (halves up),
            clipped to [1, 255]

    "paper": the parameters as given (defaults `PAPER_PARAMS`: a=255, b=80,
    c=240, T1=20, T2=60, k1=9.75, k2=1, k3=3, Qmin=5), which jump from 20 to
    60 at T2. "monotone": the same except `c = monotone_c(...)` = b + (k3 -
    k2)*T2, so the third segment continues the second at T2 and, with
    non-negative slopes and a - k1*T1 >= b - k2*T1 (true for the defaults,
    which are continuous at T1), Q never increases with delta.

    Args:
      std: band standard deviations, any shape (e.g. `[8, 8]`), >= 0.
      variant: "paper" or "monotone".
      **params: overrides of the `PlmParams` fields (a, b, c, t1, t2, k1, k2,
        k3, q_min); "monotone" derives c and does not accept it.

    Returns:
      int32 steps in [1, 255], the shape of `std`.

    Raises:
      ValueError: unknown variant or parameter, c with "monotone", t1 > t2,
        or a negative or non-finite std.
    """
    if variant not in PLM_VARIANTS:
        raise ValueError(f"variant must be one of {PLM_VARIANTS}: {variant!r}")
    fields = {f.name for f in dataclasses.fields(PlmParams)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"unknown PLM parameters {unknown}; known: {fields}")
    if variant == "monotone" and "c" in params:
        raise ValueError("the monotone variant derives c; do not pass it")
    p = dataclasses.replace(PAPER_PARAMS, **params)
    if variant == "monotone":
        p = dataclasses.replace(p, c=monotone_c(p))
    if p.t1 > p.t2:
        raise ValueError(f"need t1 <= t2, got {p.t1} > {p.t2}")
    delta = np.asarray(std, dtype=np.float64)
    if not np.all(np.isfinite(delta)) or np.any(delta < 0):
        raise ValueError("std must be finite and non-negative")
    q = np.where(
        delta <= p.t1,
        p.a - p.k1 * delta,
        np.where(delta <= p.t2, p.b - p.k2 * delta, p.c - p.k3 * delta),
    )
    q = np.floor(np.maximum(q, p.q_min) + 0.5)
    return np.clip(q, tables_io.MIN_STEP, tables_io.MAX_STEP).astype(np.int32)


def ijg_scale_factor(quality: int) -> int:
    """IJG percentage scale factor of a quality (`jpeg_quality_scaling`).

    Args:
      quality: IJG quality (values outside 1..100 are clamped, as libjpeg).

    Returns:
      5000 / quality below 50, else 200 - 2 * quality (integer arithmetic).
    """
    quality = min(max(int(quality), 1), 100)
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def scale_qtable(qtable: Any, quality: int) -> np.ndarray:
    """IJG-style scaling of a table, as libjpeg's `jpeg_add_quant_table`.

    Each step becomes (step * ijg_scale_factor(quality) + 50) // 100,
    clipped to [1, 255] (`force_baseline`). Quality 50 keeps the table; one
    scaled table is one rate point of the rate-accuracy curve (SPEC.md).

    Args:
      qtable: `[8, 8]` steps in [1, 255].
      quality: 1..100.

    Returns:
      `[8, 8]` int32.
    """
    table = validate_qtable(qtable).astype(np.int64)
    scaled = (table * ijg_scale_factor(quality) + 50) // 100
    return np.clip(scaled, tables_io.MIN_STEP, tables_io.MAX_STEP).astype(
        np.int32
    )


def standard_qtables(quality: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The tables libjpeg (and Pillow, `tf.io.encode_jpeg`) use at `quality`.

    Args:
      quality: IJG quality 1..100.

    Returns:
      `(luma, chroma)`, each `[8, 8]` int32: Annex K scaled by
      `scale_qtable`.
    """
    return (
        scale_qtable(STANDARD_LUMA_QTABLE, quality),
        scale_qtable(STANDARD_CHROMA_QTABLE, quality),
    )
