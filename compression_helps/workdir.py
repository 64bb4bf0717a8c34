"""Run directories: creation, the resolved config, skipped-image records.

Every long job (evaluation, table design, rate-accuracy, training) writes
`<workdir>/config.json` at the start and refuses to `--resume` a workdir
written with other settings, so resumed results always match one config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = [
    "atomic_path",
    "CONFIG_FILE",
    "ERRORS_FILE",
    "count_errors",
    "prepare",
    "write_config",
    "write_errors",
]

CONFIG_FILE = "config.json"
ERRORS_FILE = "errors.jsonl"


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path to write `path` to, renamed onto it on success.

    Readers never see a half-written file, and a crash leaves the old file
    (or none) plus at most a hidden `.tmp-*` folder. The temporary file has
    the same name (writers that check the extension, like Keras'
    `save_weights`, accept it) in a private folder next to `path` (so the
    rename is atomic), and is created by the writer, so it gets the usual
    file permissions.

    Args:
      path: the file to write.

    Yields:
      The temporary path; removed, with its folder, when the block ends.
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp_folder = tempfile.mkdtemp(prefix=".tmp-", dir=folder)
    try:
        tmp_path = os.path.join(tmp_folder, name)
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        shutil.rmtree(tmp_folder, ignore_errors=True)


def prepare(workdir: str) -> None:
    """Creates `workdir` and checks it is writable.

    Raises:
      PermissionError: it cannot be created or written.
    """
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise PermissionError(
            f"{workdir}: cannot create the workdir ({e.strerror})"
        ) from None
    if not os.access(workdir, os.W_OK):
        raise PermissionError(f"{workdir}: workdir is not writable")


def write_config(
    workdir: str,
    config: Any,
    resume: bool = False,
    may_change: Sequence[str] = (),
) -> None:
    """Writes a dataclass config to `<workdir>/config.json`.

    Args:
      workdir: an existing directory.
      config: a dataclass instance (JSON-serialisable fields).
      resume: first check that the workdir's config, if any, is the same.
      may_change: fields a resumed run may change (e.g. the number of
        epochs, or where the work runs): they do not change the results
        already in the workdir.

    Raises:
      ValueError: resuming a workdir written with other settings.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    if resume and os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        changed = sorted(
            k
            for k in current.keys() | previous.keys()
            if previous.get(k) != current.get(k) and k not in may_change
        )
        if changed:
            raise ValueError(
                f"{path}: cannot resume a run with other settings "
                f"({', '.join(changed)}); use a new --workdir or drop --resume"
            )
    with open(path, "w") as f:
        json.dump(current, f, indent=2)


def write_errors(workdir: str, skipped: Iterable[Any]) -> None:
    """Writes skipped-image dataclasses as `<workdir>/errors.jsonl`."""
    path = os.path.join(workdir, ERRORS_FILE)
    with open(path + ".tmp", "w") as f:
        for image in skipped:
            f.write(json.dumps(dataclasses.asdict(image)) + "\n")
    os.replace(path + ".tmp", path)


def count_errors(workdir: str) -> dict[str, int]:
    """Skipped images of `<workdir>/errors.jsonl` counted by reason kind."""
    counts: dict[str, int] = {}
    path = os.path.join(workdir, ERRORS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                kind = json.loads(line)["reason"].split(":", 1)[0]
                counts[kind] = counts.get(kind, 0) + 1
    return counts
