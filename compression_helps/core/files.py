"""Files written whole or not at all, and read back with one-line errors.

Every file the project writes goes through `atomic_path` (a temporary file
renamed into place), so a reader, or a resumed run, never sees a half-written
or empty file, also when the process is killed or the disk is full. `.npz`
files are byte-for-byte reproducible. Readers name the file and what is
wrong with it in one line. What a run may delete is decided in one place,
`remove_within`: only names inside its own folder.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from absl import logging

__all__ = [
    "atomic_path",
    "digest_inputs",
    "first_line",
    "outside_problem",
    "read_json",
    "read_npz",
    "append_jsonl",
    "read_jsonl",
    "remove_within",
    "write_bytes",
    "write_json",
    "write_npz",
    "write_text",
]

# A fixed zip timestamp makes the same arrays give byte-identical files.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path to write `path` to, renamed onto it on success.

    Readers never see a half-written file, and a crash or a full disk leaves
    the old file (or none) plus at most a hidden `.tmp-*` folder. The
    temporary file has the same name (writers that check the extension, like
    Keras' `save_weights`, accept it) in a private folder next to `path` (so
    the rename is atomic), and is created by the writer, so it gets the
    usual file permissions.

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


def write_bytes(path: str, data: bytes) -> None:
    """Writes a file atomically (`atomic_path`), synced to disk."""
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
    """Writes a UTF-8 text file atomically (`write_bytes`)."""
    write_bytes(path, text.encode())


def append_jsonl(path: str, record: Any) -> None:
    """Appends one JSON line in one write, synced to disk.

    An interruption cuts at most this line, which `read_jsonl` drops.

    Raises:
      ValueError: the record holds NaN or an infinity (`write_json`).
    """
    line = _json_text(path, record)
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str) -> list[Any]:
    """The records of a JSON-lines log written by `append_jsonl`.

    A last line cut short by an interruption is dropped, and cut off the
    file too, so that the next append starts a line of its own; a line that
    is not JSON is skipped.

    Args:
      path: the log; absent: no records.
    """
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) < len(data):
        with open(path, "r+b") as f:
            f.truncate(len(whole))
    records = []
    for line in whole.decode().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_json(path: str, value: Any) -> None:
    """Writes `value` as indented JSON, atomically.

    Raises:
      ValueError: `value` holds NaN or an infinity, which JSON has no
        words for (Python would write a bare `NaN` that strict readers
        refuse); nothing is written. A value that is not known is None.
    """
    write_text(path, _json_text(path, value, indent=2) + "\n")


def _json_text(path: str, value: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(value, indent=indent, allow_nan=False)
    except ValueError:
        raise ValueError(
            f"{path}: not written: the values hold NaN or an infinity, "
            "which JSON cannot hold"
        ) from None


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez` that is atomic and byte-for-byte reproducible.

    Args:
      path: output `.npz` path; replaced only once fully written.
      arrays: name -> array (no object arrays).
    """
    with atomic_path(path) as tmp_path:
        with zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(
                    buffer, np.asarray(array), allow_pickle=False
                )
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                archive.writestr(info, buffer.getvalue())


def first_line(error: BaseException) -> str:
    """An error's message in one line; its type's name if it has none.

    TensorFlow's decorations are dropped ("{{function_node ...}}" in front,
    tf.data's "Error in user-defined function ... Iterator::...: ", and
    " [Op:...]" behind): the reason is the library's own message.
    """
    text = (getattr(error, "message", None) or str(error)).strip()
    if not text:
        return type(error).__name__
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text.splitlines()[0])
    line = re.sub(
        r"^Error in user-defined function .*? Iterator::\S*: ", "", line
    )
    return line.split(" [Op:")[0].strip() or type(error).__name__


def _unreadable(path: str, error: Exception) -> ValueError:
    detail = first_line(error)
    if detail == type(error).__name__:
        detail = ""
    return ValueError(
        f"{path}: unreadable ({type(error).__name__}"
        + (f": {detail}" if detail else "")
        + "); delete it or use a new folder"
    )


def read_json(path: str) -> Any:
    """Reads a JSON file; a damaged one gives one line naming it.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not valid JSON (e.g. cut short).
    """
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # Recursion: nested too deep.
        raise _unreadable(path, e) from None


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Reads every array of an `.npz`; a damaged one gives one line naming it.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a readable `.npz`.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise _unreadable(path, e) from None


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_inputs(paths: Iterable[str]) -> dict[str, str]:
    """Content hashes of the input files that change a run's results.

    Args:
      paths: files, or folders (every file in them, recursively).

    Returns:
      Path -> SHA-256 of its content, for every file.

    Raises:
      FileNotFoundError: a path that does not exist.
    """
    digests = {}
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    file = os.path.join(root, name)
                    digests[file] = _file_digest(file)
        elif os.path.exists(path):
            digests[path] = _file_digest(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return digests


def outside_problem(root: str, name: str) -> str | None:
    """Why `<root>/<name>` is not a name strictly inside `root`, or None.

    The rule of `remove_within`, also for checking a name before it is
    recorded. A name is inside when it is relative, has no `..` part, does
    not name `root` itself, and its parent folder's real path (links
    resolved) is `root`'s real path or below it. Its last part is not
    resolved: a link inside `root` is a name inside, whatever it points to.

    Args:
      root: the folder.
      name: a path relative to it.

    Returns:
      The problem in a few words, or None for a name inside.
    """
    if (
        not isinstance(name, str)
        or "\0" in name
        or os.path.normpath(name) == os.curdir
    ):
        return "not a name of a file in the folder"
    if os.path.isabs(name):
        return "an absolute path"
    if os.pardir in name.split(os.sep):
        return "a path with '..'"
    real_root = os.path.realpath(root)
    parent = os.path.realpath(os.path.dirname(os.path.join(root, name)))
    if os.path.commonpath([real_root, parent]) != real_root:
        return "its folder is a link out of the folder"
    return None


def remove_within(
    root: str, names: Iterable[str], patterns: bool = False
) -> list[str]:
    """Removes files and folders that a run wrote in its folder, only those.

    Every removal of a run's earlier outputs goes through here (a run
    folder's `.run.json`, `compress`' `written.jsonl`): those records are
    files that anyone may edit, so each name is checked first
    (`outside_problem`) and a name that is not strictly inside `root` is
    refused, logged and left alone. Links are never followed: a link is
    removed as a link, a folder with `shutil.rmtree` (which removes the
    links in it without following them), a link in the middle of a name
    that leads out of `root` refuses the name. Folders left empty by a
    removal, between it and `root`, are removed too. A name that is not
    there is skipped.

    Args:
      root: the run's folder.
      names: paths relative to it.
      patterns: the names are glob patterns (`shards/x-*.npz`); each
        match is checked like a name. False: taken as they are (a file
        may be called `a[1].jpg`).

    Returns:
      The refused names, each as `<name> (<problem>)`.
    """
    refused = []
    for name in names:
        problem = outside_problem(root, name)
        if problem is not None:
            refused.append(f"{name} ({problem})")
            continue
        if patterns:
            found = glob.glob(os.path.join(glob.escape(root), name))
            matches = [os.path.relpath(path, root) for path in found]
        else:
            matches = [name]
        for match in sorted(matches):
            problem = outside_problem(root, match)
            if problem is not None:
                refused.append(f"{match} ({problem})")
            else:
                _remove_inside(root, match)
    for item in refused:
        logging.warning("%s: not removing %s", root, item)
    return refused


def _remove_inside(root: str, name: str) -> None:
    """Removes `<root>/<name>` without following a link, then empty parents."""
    path = os.path.join(root, os.path.normpath(name))
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)
    elif mode is not None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)  # A link: the link itself.
    real_root = os.path.realpath(root)
    folder = os.path.dirname(path)
    while os.path.realpath(folder) != real_root and os.path.isdir(folder):
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # Only when empty.
        if os.path.isdir(folder):
            return
        folder = os.path.dirname(folder)
