"""Quantization table files: checks, JSON table sets, shipped sets.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

SPEC.md ("Writing the files"): tables are exported as JSON (here) and as a
libjpeg `cjpeg -qtables` text file (`cjpeg_text`). Not in the paper
(SPEC.md, "Table set files and shipped sets"): a JSON table set may also
fix the chroma subsampling and the encoder its tables were made for (a
table set fitted to a model with one encoder is only claimed for that
encoder); the values are checked where they are used (`deepn_jpeg.codec`).
Table sets shipped with the package (`deepn_jpeg/jpeg/qtables/<name>.json`)
load by name.

`deepn_jpeg.tables` re-exports every public name here (`tables.load_json`,
...): use it. This module holds the file formats and the checks they need,
and imports nothing from `tables`, so `tables` can re-export it.

Every table is `[8, 8]` in natural (row-major, not zigzag) order, row =
vertical frequency: the order of Pillow's `qtables=`, libjpeg's
`jpeg_add_quant_table` and `cjpeg -qtables` files. A file is read only if
it is a regular file within 1 MiB, and any JSON in it gives one line
saying what is wrong (`load_tableset`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import re
from typing import Any

import numpy as np

from compression_helps.core import files
from compression_helps.sources import guard

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
    "save_json",
    "shipped_names",
    "tableset_file",
    "tables_file_problem",
    "tableset_from_json",
    "to_json",
    "validate_qtable",
]

# Baseline JPEG stores 8-bit steps.
MIN_STEP, MAX_STEP = 1, 255
# The package whose folder holds the shipped `<name>.json` table sets.
SHIPPED_PACKAGE = "deepn_jpeg.jpeg.qtables"
_JSON_FORMAT = "deepn_jpeg.qtables/1"
_MAX_JSON_BYTES = 1 << 20
# What a tables file may be: a regular file (never a FIFO that blocks, or
# a device), at most `_MAX_JSON_BYTES`.
_FILE_LIMITS = guard.Limits(max_file_bytes=_MAX_JSON_BYTES)
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
    huge = [v for v in _leaves(qtable) if isinstance(v, int) and abs(v) > 2**64]
    if huge:  # Beyond a float64 (a 400-digit integer of a JSON file).
        raise ValueError(
            f"baseline qtable entries must be in [1, 255], got an integer "
            f"of {len(str(abs(huge[0])))} digits"
        )
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
    """The entries of nested lists and arrays, as Python values.

    Without recursion: a file may nest lists as deep as JSON allows.
    """
    leaves, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(reversed(item))
        elif hasattr(item, "__array__"):  # NumPy arrays, scalars, tensors.
            leaves.extend(np.asarray(item).ravel().tolist())
        else:
            leaves.append(item)
    return leaves


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
    except RecursionError:  # Arrays nested thousands deep.
        raise ValueError(
            "not JSON this reader takes: nested too deep"
        ) from None
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
    # Opened without blocking (a FIFO's open waits for a writer) and
    # checked before any read: only a regular file within the limit.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        problem = guard.stat_problem(os.fstat(fd), path, _FILE_LIMITS)
        # Bounded: a tables file is about 1 KB.
        data = b"" if problem else f.read(_MAX_JSON_BYTES + 1)
    try:
        if problem:
            raise ValueError(problem)
        if len(data) > _MAX_JSON_BYTES:  # Grew since the check.
            raise ValueError(f"larger than {_MAX_JSON_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        return tableset_from_json(text)
    except ValueError as e:
        raise ValueError(f"{path}: not a valid tables file ({e})") from None


def tables_file_problem(path: str) -> str | None:
    """Why an existing path cannot be a tables file, from `os.stat` alone.

    The rule `load_tableset` applies as it opens the file, for checking
    paths before anything reads them (a FIFO is never opened).

    Args:
      path: a path (a link is followed).

    Returns:
      `<path>: not a valid tables file (not a regular file: a FIFO)` and
      the like, or None: a regular file within the size limit, or no such
      path (opening it says so).
    """
    try:
        info = os.stat(path)
    except OSError:
        return None
    problem = guard.stat_problem(info, path, _FILE_LIMITS)
    return f"{path}: not a valid tables file ({problem})" if problem else None


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
