"""Quantization tables: DeepN-JPEG's PLM, standard JPEG, IJG scaling, files.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

The piece-wise linear mapping (PLM, Sec. 3.3) turns each band's DCT standard
deviation (`deepn_jpeg.statistics`) into a quantization step. Its parameter
values ("paper" defaults) come from a public re-implementation and are not
confirmed against the paper's text; they make the step jump up at T2 (20 just
below, 60 just above), so the "monotone" variant removes that jump.

Every table here is `[8, 8]` in natural (row-major, not zigzag) order, row =
vertical frequency: the order of Pillow's `qtables=` and `Image.quantization`,
libjpeg's `jpeg_add_quant_table` and `cjpeg -qtables` files.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from compression_helps import files

__all__ = [
    "PAPER_PARAMS",
    "PLM_VARIANTS",
    "STANDARD_CHROMA_QTABLE",
    "STANDARD_LUMA_QTABLE",
    "PlmParams",
    "format_qtable",
    "from_json",
    "ijg_scale_factor",
    "load_json",
    "monotone_c",
    "plm",
    "qtables_filename",
    "read_cjpeg_qtables",
    "save_json",
    "scale_qtable",
    "standard_qtables",
    "to_cjpeg_qtables",
    "to_json",
    "validate_qtable",
    "write_cjpeg_qtables",
]

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
# Baseline JPEG stores 8-bit steps.
_MIN_STEP, _MAX_STEP = 1, 255
_JSON_FORMAT = "deepn_jpeg.qtables/1"
_MAX_JSON_BYTES = 1 << 20


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
    return np.clip(q, _MIN_STEP, _MAX_STEP).astype(np.int32)


def validate_qtable(qtable: Any) -> np.ndarray:
    """Checks a quantization table for baseline JPEG.

    Args:
      qtable: 64 integers (any nesting, natural order).

    Returns:
      `[8, 8]` int32.

    Raises:
      ValueError: not 64 integers in [1, 255] (one line).
    """
    # Entries as a JSON file may hold them: strings, None, booleans.
    bad = [v for v in _leaves(qtable) if not _is_number(v)]
    if bad:
        raise ValueError(f"qtable entries must be integers, got {bad[0]!r}")
    try:
        array = np.asarray(qtable, dtype=np.float64)  # Also ints > int64.
    except ValueError:  # Ragged nesting, e.g. a row of 7.
        raise ValueError("a qtable has 8 rows of 8 entries") from None
    if array.size != 64:
        raise ValueError(f"a qtable has 64 entries, got shape {array.shape}")
    with np.errstate(invalid="ignore"):  # mod(inf, 1) is NaN: refused.
        fractional = ~np.isfinite(array) | (np.mod(array, 1) != 0)
    if np.any(fractional):
        bad = array[fractional].ravel()[0].item()
        raise ValueError(f"qtable entries must be integers, got {bad!r}")
    if array.min() < _MIN_STEP or array.max() > _MAX_STEP:
        raise ValueError(
            f"baseline qtable entries must be in [1, 255], got "
            f"[{array.min():g}, {array.max():g}]"
        )
    return array.astype(np.int32).reshape(8, 8)


def _leaves(value: Any) -> list[Any]:
    """The entries of nested lists and arrays, as Python values."""
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    if hasattr(value, "__array__"):  # NumPy arrays and scalars, tensors.
        return np.asarray(value).ravel().tolist()
    return [value]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    return np.clip(scaled, _MIN_STEP, _MAX_STEP).astype(np.int32)


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


def format_qtable(table: Any, fmt: str = "{:4d}") -> str:
    """An 8x8 grid as text, one row per line.

    Args:
      table: `[8, 8]` numbers.
      fmt: format of one entry, e.g. "{:4d}" or "{:7.2f}".

    Returns:
      8 lines, no trailing newline.
    """
    array = np.asarray(table).reshape(8, 8)
    if "d}" in fmt:
        array = array.astype(np.int64)
    return "\n".join(
        "".join(fmt.format(value) for value in row) for row in array.tolist()
    )


def to_json(
    luma: Any, chroma: Any, metadata: dict[str, Any] | None = None
) -> str:
    """A pair of tables as JSON (natural order, 8 rows of 8).

    Args:
      luma: `[8, 8]` luma table.
      chroma: `[8, 8]` chroma table.
      metadata: extra JSON-serialisable fields (e.g. PLM parameters).

    Returns:
      The JSON document.
    """
    return json.dumps(
        {
            "format": _JSON_FORMAT,
            "order": "natural",
            "luma": validate_qtable(luma).tolist(),
            "chroma": validate_qtable(chroma).tolist(),
            "metadata": metadata or {},
        },
        indent=1,
    )


def from_json(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads `to_json` output.

    Args:
      text: the JSON document.

    Returns:
      `(luma, chroma)`, `[8, 8]` int32 each.

    Raises:
      ValueError: not JSON, not a qtables document, or invalid tables (one
        line saying which).
    """
    try:
        data = json.loads(text)
    except ValueError as e:  # JSONDecodeError: one line with the position.
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != _JSON_FORMAT:
        raise ValueError(f"not a {_JSON_FORMAT} document")
    found = []
    for key in ("luma", "chroma"):
        if key not in data:
            raise ValueError(f"no {key} table")
        try:
            found.append(validate_qtable(data[key]))
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    return found[0], found[1]


def qtables_filename(name: str, extension: str) -> str:
    """The file name of a table set in a run folder.

    Args:
      name: the set's name: a PLM variant, or a fitted set's name.
      extension: "json" (`save_json`) or "txt" (`write_cjpeg_qtables`).

    Returns:
      `qtables_<name>.<extension>`, relative to the run folder.
    """
    return f"qtables_{name}.{extension}"


def save_json(
    path: str,
    luma: Any,
    chroma: Any,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Writes `to_json(luma, chroma, metadata)` to `path`, atomically.

    Args:
      path: output file.
      luma: `[8, 8]` luma table.
      chroma: `[8, 8]` chroma table.
      metadata: extra JSON fields.
    """
    files.write_text(path, to_json(luma, chroma, metadata))


def load_json(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a file written by `save_json`.

    Args:
      path: the JSON file.

    Returns:
      `(luma, chroma)`, `[8, 8]` int32 each.

    Raises:
      OSError: the file cannot be opened (its message names it).
      ValueError: `<path>: not a valid tables file (<why>)`, one line.
    """
    with open(path, "rb") as f:
        # Bounded: a tables file is about 1 KB, `path` may be a device.
        data = f.read(_MAX_JSON_BYTES + 1)
    try:
        if len(data) > _MAX_JSON_BYTES:
            raise ValueError(f"larger than {_MAX_JSON_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        return from_json(text)
    except ValueError as e:
        raise ValueError(f"{path}: not a valid tables file ({e})") from None


def to_cjpeg_qtables(tables: Sequence[Any], comment: str | None = None) -> str:
    """Tables as a libjpeg `cjpeg -qtables` text file.

    The format of libjpeg's usage.txt: 64 whitespace-separated integers per
    table in natural (not zigzag) order, `#` starts a comment. Use as

        cjpeg -qtables FILE -qslots 0,1 -sample 2x2 -optimize in.ppm

    without `-quality` (cjpeg scales -qtables tables by the -quality scale
    factor, 100% when it is absent).

    Args:
      tables: the tables for slots 0, 1, ... (luma first), `[8, 8]` each.
      comment: text for a leading `#` comment (may have several lines).

    Returns:
      The file's text.
    """
    lines = [f"# {line}" for line in (comment or "").splitlines()]
    for slot, table in enumerate(tables):
        lines.append(f"# table {slot}")
        lines.append(format_qtable(validate_qtable(table)))
    return "\n".join(lines) + "\n"


def read_cjpeg_qtables(text: str) -> list[np.ndarray]:
    """Parses a `cjpeg -qtables` text file.

    Args:
      text: the file's text.

    Returns:
      The tables in file order, `[8, 8]` int32 each.

    Raises:
      ValueError: a count of numbers that is not a multiple of 64, or bad
        values.
    """
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    tokens = re.findall(r"\S+", body)
    try:
        values = [int(token) for token in tokens]
    except ValueError:
        raise ValueError("a -qtables file holds only integers") from None
    if not values or len(values) % 64:
        raise ValueError(
            f"a -qtables file holds 64 numbers per table, got {len(values)}"
        )
    return [
        validate_qtable(values[i : i + 64]) for i in range(0, len(values), 64)
    ]


def write_cjpeg_qtables(
    path: str, tables: Sequence[Any], comment: str | None = None
) -> None:
    """Writes `to_cjpeg_qtables(tables, comment)` to `path`, atomically.

    Args:
      path: output file.
      tables: the tables for slots 0, 1, ..., `[8, 8]` each.
      comment: leading comment.
    """
    files.write_text(path, to_cjpeg_qtables(tables, comment))
