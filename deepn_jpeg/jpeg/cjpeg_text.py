"""Quantization tables as libjpeg `cjpeg -qtables` text files.

SPEC.md ("Writing the files"): beside its JSON file (`tables_io`), a table
set is exported as the text file libjpeg's `cjpeg -qtables` reads. Tables
are `[8, 8]` in natural order, as everywhere (`tables_io`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from compression_helps.core import files
from deepn_jpeg.jpeg import tables_io

__all__ = ["read_cjpeg_qtables", "to_cjpeg_qtables", "write_cjpeg_qtables"]


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
        lines.append(tables_io.format_qtable(tables_io.validate_qtable(table)))
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
        tables_io.validate_qtable(values[i : i + 64])
        for i in range(0, len(values), 64)
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
