"""Table sets as files: finding them, loading them, writing them.

Every job that makes tables (`design`, `fit`, `sensitivity`) writes a table
set `<name>` into its run folder as `qtables_<name>.json` (the tables and
what they were made from, `tables.save_json`) and `qtables_<name>.txt`
(`cjpeg -qtables`), through `write_tableset`. Every job that reads tables
(`rate_accuracy`, `fit`'s sensitivity start, `crossfit`) names them by
paths: a run folder (every table set in it), a tables file, or the name of a
set shipped with the package (`tables.shipped_names`); `tables_files`
resolves them and refuses names that would read as another curve.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from compression_helps.core import rundir
from compression_helps.engine import candidates
from deepn_jpeg.jpeg import codec, tables

__all__ = [
    "ENCODER_MARK",
    "load_sets",
    "load_tablesets",
    "tables_files",
    "write_tableset",
]

# Joins a curve and the encoder that wrote it: `jpeg@mozjpeg`.
ENCODER_MARK = "@"
_PREFIX = "qtables_"
# cjpeg's `-sample` (luma sampling factors) for each chroma subsampling.
_CJPEG_SAMPLE = {"4:4:4": "1x1", "4:2:2": "2x1", "4:2:0": "2x2"}


def _files_in(path: str) -> dict[str, str]:
    """Table set name -> its JSON file, for a folder or one file."""
    problem = tables.tables_file_problem(path)
    if problem and not os.path.isdir(path):  # A FIFO, a device: unopened.
        raise ValueError(problem)
    if os.path.isfile(path):
        name = os.path.splitext(os.path.basename(path))[0]
        return {name.removeprefix(_PREFIX): path}
    if not os.path.isdir(path):
        # Not a path: a shipped set's name (one-line error listing them).
        file = tables.tableset_file(path)
        if file == path:
            raise FileNotFoundError(f"{path}: no such tables file or folder")
        return {path: file}
    # The PLM variants first, in their usual order, then by name.
    names = sorted(
        (
            f.removeprefix(_PREFIX).removesuffix(".json")
            for f in os.listdir(path)
            if f.startswith(_PREFIX) and f.endswith(".json")
        ),
        key=lambda n: (
            tables.PLM_VARIANTS.index(n)
            if n in tables.PLM_VARIANTS
            else len(tables.PLM_VARIANTS),
            n,
        ),
    )
    if not names:
        raise FileNotFoundError(
            f"{path}: no qtables_<name>.json (run design_qtable.py or "
            "fit_qtable.py first)"
        )
    return {
        name: os.path.join(path, tables.qtables_filename(name, "json"))
        for name in names
    }


def tables_files(paths: str | Sequence[str]) -> dict[str, str]:
    """Table set name -> its JSON file, from folders and/or files.

    Args:
      paths: one path or several; a folder contributes every
        `qtables_<name>.json` in it (name `<name>`), a file itself (name:
        its file name without `qtables_` and `.json`), and an entry that is
        not an existing path names a shipped set (`tables.tableset_file`;
        name: itself, the file: the package's).

    Returns:
      The files, in path order.

    Raises:
      FileNotFoundError: no paths, a path without tables, or an unknown
        shipped name.
      ValueError: two table sets with the same name, a reserved name
        ("jpeg", "original", or one with `ENCODER_MARK`), or a path that
        is not a regular file or folder (`tables.tables_file_problem`).
    """
    if isinstance(paths, str):
        paths = (paths,)
    if not paths:
        raise FileNotFoundError("no tables given (--tables)")
    found: dict[str, str] = {}
    for path in paths:
        for name, file in _files_in(path).items():
            if name in found:
                raise ValueError(f"two table sets named {name!r} ({path})")
            if not name or name in (candidates.JPEG, candidates.ORIGINAL):
                raise ValueError(f"{file}: table set name {name!r} is reserved")
            if ENCODER_MARK in name:  # It would read as `<curve>@<encoder>`.
                raise ValueError(
                    f"{file}: table set name {name!r} has {ENCODER_MARK!r}"
                )
            found[name] = file
    return found


def load_sets(paths: str | Sequence[str]) -> dict[str, tables.TableSet]:
    """Name -> table set of every file of `tables_files(paths)`.

    Args:
      paths: see `tables_files`.

    Returns:
      The tables with the subsampling and encoder each file fixes.

    Raises:
      FileNotFoundError: a path without tables.
      ValueError: duplicate or reserved names, or a file that is not a
        valid tables file (one line naming it, `tables.load_tableset`),
        also for a subsampling or encoder it fixes that `codec` refuses.
    """
    found = {}
    for name, file in tables_files(paths).items():
        tableset = tables.load_tableset(file)
        try:
            if tableset.subsampling is not None:
                codec.check_subsampling(tableset.subsampling)
            if tableset.encoder is not None:
                codec.check_encoder(tableset.encoder)
        except ValueError as e:
            raise ValueError(f"{file}: not a valid tables file ({e})") from None
        found[name] = tableset
    return found


def load_tablesets(
    paths: str | Sequence[str],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (luma, chroma) of every table set of `tables_files(paths)`.

    Raises:
      FileNotFoundError: a path without tables.
      ValueError: see `load_sets`.
    """
    return {
        name: (tableset.luma, tableset.chroma)
        for name, tableset in load_sets(paths).items()
    }


def write_tableset(
    run_dir: rundir.RunDir,
    name: str,
    luma: Any,
    chroma: Any,
    comment: str,
    metadata: dict[str, Any],
    subsampling: str | None = None,
) -> None:
    """Writes `qtables_<name>.json` and `.txt` (`cjpeg -qtables`), atomically.

    Args:
      run_dir: the job's run folder.
      name: the table set's name (its curve in `rate_accuracy`).
      luma: `[8, 8]` luma table.
      chroma: `[8, 8]` chroma table.
      comment: what the tables are, for the text file's leading comment;
        how to use them with cjpeg is added.
      metadata: what they were made from, for the JSON file.
      subsampling: the chroma subsampling the tables are fixed to (in the
        JSON file, and cjpeg's `-sample`), or None.
    """
    sample = f" -sample {_CJPEG_SAMPLE[subsampling]}" if subsampling else ""
    run_dir.write_text(
        tables.qtables_filename(name, "json"),
        tables.to_json(luma, chroma, metadata, subsampling=subsampling),
    )
    run_dir.write_text(
        tables.qtables_filename(name, "txt"),
        tables.to_cjpeg_qtables(
            [luma, chroma],
            comment=f"{comment}\nslot 0: luma, slot 1: chroma; natural order; "
            f"cjpeg -qtables FILE -qslots 0,1{sample} (no -quality)",
        ),
    )
