"""Quantization table files: checks, JSON table sets, shipped sets, cjpeg.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

SPEC.md ("Writing the files"): tables are exported as JSON and as a libjpeg
`cjpeg -qtables` text file. Not in the paper (SPEC.md, "Table set files
and shipped sets"): a JSON table set may also fix
the chroma subsampling and the encoder its tables were made for (a table set
fitted to a model with one encoder is only claimed for that encoder); the
values are checked where they are used (`deepn_jpeg.codec`). Table sets
shipped with the package (`deepn_jpeg/jpeg/qtables/<name>.json`) load by name.

`deepn_jpeg.tables` re-exports every public name here (`tables.load_json`,
...): use it. This module holds the file formats and the checks they need,
and imports nothing from `tables`, so `tables` can re-export it.

Every table is `[8, 8]` in natural (row-major, not zigzag) order, row =
vertical frequency: the order of Pillow's `qtables=`, libjpeg's
`jpeg_add_quant_table` and `cjpeg -qtables` files.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from compression_helps.core import files

__all__ = [
    "MAX_STEP",
    "MIN_STEP",
    "SHIPPED_PACKAGE",
    "TableSet",
    "format_qtable",
    "from_json",
    "load_json",
    "load_tableset",
    "qtables_filename",
    "read_cjpeg_qtables",
    "save_json",
    "shipped_names",
    "tableset_file",
    "tableset_from_json",
    "to_cjpeg_qtables",
    "to_json",
    "validate_qtable",
    "write_cjpeg_qtables",
]

# Baseline JPEG stores 8-bit steps.
MIN_STEP, MAX_STEP = 1, 255
# The package whose folder holds the shipped `<name>.json` table sets.
SHIPPED_PACKAGE = "deepn_jpeg.jpeg.qtables"
_JSON_FORMAT = "deepn_jpeg.qtables/1"
_MAX_JSON_BYTES = 1 << 20
_SETTINGS = ("subsampling", "encoder")
# A shipped set's name: no path separator and no extension, so an argument
# that looks like a path is always treated as one.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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
    if array.min() < MIN_STEP or array.max() > MAX_STEP:
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


@dataclasses.dataclass(frozen=True, eq=False)
class TableSet:
    """Two quantization tables and the settings they are meant for.

    The tables are checked (`validate_qtable`) and made read-only when the
    set is made, so code holding a `TableSet` need not check them again.
    Sets compare by identity (the fields hold arrays): compare the fields.

    Attributes:
      luma: `[8, 8]` int32 luma table (slot 0, Y).
      chroma: `[8, 8]` int32 chroma table (slot 1, Cb and Cr).
      subsampling: the chroma subsampling the tables are meant for (one of
        `codec.SUBSAMPLINGS`); None: not fixed.
      encoder: the encoder they are meant for (one of `codec.ENCODERS`);
        None: not fixed.
    """

    luma: np.ndarray
    chroma: np.ndarray
    subsampling: str | None = None
    encoder: str | None = None

    def __post_init__(self) -> None:
        """Checks the tables and the settings' types (one line each)."""
        for key in ("luma", "chroma"):
            try:
                table = validate_qtable(getattr(self, key))
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
            table.setflags(write=False)
            object.__setattr__(self, key, table)  # Frozen: no plain setattr.
        for key in _SETTINGS:
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a string or null: {value!r}")


def to_json(
    luma: Any,
    chroma: Any,
    metadata: dict[str, Any] | None = None,
    *,
    subsampling: str | None = None,
    encoder: str | None = None,
) -> str:
    """A pair of tables as JSON (natural order, 8 rows of 8).

    Args:
      luma: `[8, 8]` luma table.
      chroma: `[8, 8]` chroma table.
      metadata: extra JSON-serialisable fields (e.g. PLM parameters).
      subsampling: the chroma subsampling the tables are fixed to; None:
        not fixed (no "subsampling" key).
      encoder: the encoder they are fixed to; None: not fixed (no key).

    Returns:
      The JSON document.
    """
    tableset = TableSet(luma, chroma, subsampling, encoder)
    document = {
        "format": _JSON_FORMAT,
        "order": "natural",
        "luma": tableset.luma.tolist(),
        "chroma": tableset.chroma.tolist(),
    }
    for key in _SETTINGS:  # Absent keys keep older files byte-identical.
        if getattr(tableset, key) is not None:
            document[key] = getattr(tableset, key)
    document["metadata"] = metadata or {}
    return json.dumps(document, indent=1)


def tableset_from_json(text: str) -> TableSet:
    """Reads `to_json` output, with the settings it fixes.

    Args:
      text: the JSON document.

    Returns:
      The tables and their "subsampling" and "encoder" (None where the
      document has no such key, or null).

    Raises:
      ValueError: not JSON, not a qtables document, invalid tables or a
        setting that is not a string (one line saying which).
    """
    try:
        data = json.loads(text)
    except ValueError as e:  # JSONDecodeError: one line with the position.
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != _JSON_FORMAT:
        raise ValueError(f"not a {_JSON_FORMAT} document")
    for key in ("luma", "chroma"):
        if key not in data:
            raise ValueError(f"no {key} table")
    return TableSet(
        data["luma"],
        data["chroma"],
        data.get("subsampling"),
        data.get("encoder"),
    )


def from_json(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The tables of `to_json` output (`tableset_from_json` without settings).

    Args:
      text: the JSON document.

    Returns:
      `(luma, chroma)`, `[8, 8]` int32 each, read-only.

    Raises:
      ValueError: see `tableset_from_json`.
    """
    tableset = tableset_from_json(text)
    return tableset.luma, tableset.chroma


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
    *,
    subsampling: str | None = None,
    encoder: str | None = None,
) -> None:
    """Writes `to_json(luma, chroma, metadata, ...)` to `path`, atomically.

    Args:
      path: output file.
      luma: `[8, 8]` luma table.
      chroma: `[8, 8]` chroma table.
      metadata: extra JSON fields.
      subsampling: the chroma subsampling the tables are fixed to, or None.
      encoder: the encoder they are fixed to, or None.
    """
    text = to_json(
        luma, chroma, metadata, subsampling=subsampling, encoder=encoder
    )
    files.write_text(path, text)


def _shipped_dir() -> str:
    # A folder on disk: the package is installed unzipped (setup.py).
    return os.fspath(importlib.resources.files(SHIPPED_PACKAGE))


def shipped_names() -> tuple[str, ...]:
    """The table sets shipped with the package, sorted.

    Returns:
      The names `<name>` of the `deepn_jpeg/jpeg/qtables/<name>.json` files.
    """
    names = (
        file.removesuffix(".json")
        for file in os.listdir(_shipped_dir())
        if file.endswith(".json")
    )
    return tuple(sorted(name for name in names if _NAME.fullmatch(name)))


def tableset_file(path_or_name: str) -> str:
    """The JSON file of a table set given by path or by shipped name.

    Args:
      path_or_name: a tables file; or, when no such path exists, the name of
        a shipped set (`shipped_names`). An argument that is not a plain name
        (it has a "/" or a ".", e.g. "sets/a.json") is always a path.

    Returns:
      `path_or_name` itself, or the shipped file's path.

    Raises:
      FileNotFoundError: a plain name that is not a shipped set (one line
        listing the shipped sets).
    """
    path_or_name = os.fspath(path_or_name)
    if os.path.exists(path_or_name) or not _NAME.fullmatch(path_or_name):
        return path_or_name  # A missing path fails where it is opened.
    path = os.path.join(_shipped_dir(), f"{path_or_name}.json")
    if not os.path.isfile(path):
        shipped = ", ".join(shipped_names()) or "none"
        raise FileNotFoundError(
            f"{path_or_name}: no such tables file, and no shipped table set "
            f"of that name (shipped: {shipped})"
        )
    return path


def load_tableset(path_or_name: str) -> TableSet:
    """Reads a table set by path (`save_json`) or by shipped name.

    Args:
      path_or_name: see `tableset_file`.

    Returns:
      The tables and the settings the file fixes.

    Raises:
      OSError: the file cannot be opened (its message names it), or an
        unknown name (`tableset_file`).
      ValueError: `<path>: not a valid tables file (<why>)`, one line.
    """
    path = tableset_file(path_or_name)
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
        return tableset_from_json(text)
    except ValueError as e:
        raise ValueError(f"{path}: not a valid tables file ({e})") from None


def load_json(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The tables of a file written by `save_json` (`load_tableset`).

    Args:
      path: the JSON file (or a shipped set's name).

    Returns:
      `(luma, chroma)`, `[8, 8]` int32 each, read-only.

    Raises:
      OSError: the file cannot be opened (its message names it).
      ValueError: `<path>: not a valid tables file (<why>)`, one line.
    """
    tableset = load_tableset(path)
    return tableset.luma, tableset.chroma


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
