"""Run directories: every job owns, locks, checks and writes them one way.

A job (evaluation, table design, rate-accuracy, table fitting, training)
opens its `--workdir` with `RunDir.open`, which

- refuses a non-empty folder that this project did not make, so a run never
  deletes or overwrites a user's files; a run folder lists what its runs
  wrote (`.run.json`), and a fresh run in it removes exactly that;
- holds an exclusive lock while the job runs (a second run is refused);
- writes `config.json`: the settings, the identity of the data (file names,
  sizes and modification times, or the TFDS name, split and version) and a
  hash of every input file that changes results (e.g. a tables file).
  `resume=True` refuses, with one line, a folder whose record differs.

Every file goes through one atomic writer (`atomic_path`): a reader, or a
resumed run, never sees a half-written or empty file, also on a full disk.
Long work over a source runs through `RunDir.map_shards`, which keeps each
finished range of images as one file, so a killed run resumes where it
stopped and computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

__all__ = [
    "CONFIG_FILE",
    "ERRORS_FILE",
    "SHARD_DIR",
    "JsonlCache",
    "RunDir",
    "SkippedImage",
    "atomic_path",
    "digest_inputs",
    "read_json",
    "read_npz",
    "write_json",
    "write_npz",
    "write_text",
]

CONFIG_FILE = "config.json"
ERRORS_FILE = "errors.jsonl"
SHARD_DIR = "shards"
_MARKER_FILE = ".run.json"  # Which job made the folder, and what it wrote.
_LOCK_FILE = ".lock"
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


def write_text(path: str, text: str) -> None:
    """Writes a text file atomically (`atomic_path`)."""
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str, value: Any) -> None:
    """Writes `value` as indented JSON, atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


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


def _unreadable(path: str, error: Exception) -> ValueError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return ValueError(
        f"{path}: unreadable ({type(error).__name__}"
        + (f": {detail}" if detail else "")
        + "); delete it or use a new --workdir"
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
    except ValueError as e:
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


@dataclasses.dataclass(frozen=True)
class SkippedImage:
    """An image a job could not use, and why.

    Attributes:
      id: the example id.
      path: its file, or source and id.
      reason: `<kind>: <detail>`; kinds: empty file, no ImageNet label,
        unreadable file, cannot decode, failed.
    """

    id: str
    path: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason without its detail, for counting."""
        return self.reason.split(":", 1)[0]

    @staticmethod
    def to_array(skipped: Sequence[SkippedImage]) -> np.ndarray:
        """`[K, 3]` str array (id, path, reason), for shard files."""
        rows = [[s.id, s.path, s.reason] for s in skipped]
        return np.array(rows, dtype=str).reshape(-1, 3)

    @staticmethod
    def from_array(array: np.ndarray) -> list[SkippedImage]:
        """Inverse of `to_array`."""
        return [SkippedImage(*row) for row in array.tolist()]


class JsonlCache:
    """An append-only JSON-lines log that doubles as a cache of results.

    Each record carries a `key` that fixes its result (with the run's
    config). A line cut short by an interruption is ignored, so a resumed
    run recomputes only that record.
    """

    def __init__(self, path: str):
        """Reads the records already in `path`, if any."""
        self.path = path
        self.records: dict[str, dict] = {}
        self.computed = self.replayed = 0
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(record, dict) and "key" in record:
                        self.records[record["key"]] = record

    def get_or_compute(self, key: str, compute: Callable[[], dict]) -> dict:
        """The logged record of `key`, or `compute()`'s, appended to the log."""
        record = self.records.get(key)
        if record is not None:
            self.replayed += 1
            return record
        record = {**compute(), "key": key}
        self.computed += 1
        self.records[key] = record
        # One write of one whole line: an interruption cuts at most it.
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        return record


class RunDir:
    """One job's run directory; made by `RunDir.open`.

    Attributes:
      root: the folder.
      job: the job's name, e.g. "run_selectors".
      config: the record written to `config.json`: `{"job", "settings",
        "data", "inputs"}`.
    """

    def __init__(self, root: str, job: str, config: dict):
        """Use `RunDir.open`."""
        self.root = root
        self.job = job
        self.config = config
        self._marker_path = os.path.join(root, _MARKER_FILE)
        self._owned = set(_read_marker(self._marker_path).get("owned", []))

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        root: str,
        job: str,
        settings: Any,
        resume: bool = False,
        data: Any = None,
        inputs: Sequence[str] = (),
        may_change: Sequence[str] = (),
    ) -> Iterator[RunDir]:
        """Opens (creates, locks, checks) a job's run directory.

        Args:
          root: the `--workdir`.
          job: the job's name; a folder made by another job is refused.
          settings: the job's dataclass config (JSON-serialisable fields).
          resume: keep the previous run's outputs and continue it; its
            settings, data and inputs must be the same. False: remove what
            a previous run wrote here (and nothing else), start afresh.
          data: the identity of the data (`datasets.Source.fingerprint`).
          inputs: files or folders whose content changes the results.
          may_change: settings a resumed run may change (e.g. more epochs):
            they do not change the results already in the folder.

        Yields:
          The `RunDir`, locked until the block ends.

        Raises:
          PermissionError: the folder cannot be created or written.
          ValueError: the folder holds files this project did not write, is
            another job's, is in use by another run, or (resume) was
            written with other settings, data or inputs.
        """
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise PermissionError(
                f"{root}: cannot create the workdir ({e.strerror})"
            ) from None
        if not os.access(root, os.W_OK):
            raise PermissionError(f"{root}: workdir is not writable")
        marker_path = os.path.join(root, _MARKER_FILE)
        marker = _read_marker(marker_path)
        if not marker and set(os.listdir(root)) - {_LOCK_FILE}:
            raise ValueError(
                f"{root}: folder holds files this project did not write; "
                "use a new or empty --workdir"
            )
        if marker and marker.get("job") != job:
            raise ValueError(
                f"{root}: workdir of a {marker.get('job')} run, not "
                f"{job}; use a new --workdir"
            )
        with _lock(root):
            if not marker:
                write_json(marker_path, {"job": job, "owned": []})
            record = {
                "job": job,
                "settings": json.loads(
                    json.dumps(dataclasses.asdict(settings))
                ),
                "data": data,
                "inputs": digest_inputs(inputs),
            }
            config_path = os.path.join(root, CONFIG_FILE)
            if resume and os.path.exists(config_path):
                _check_resumable(
                    config_path, read_json(config_path), record, may_change
                )
            run = cls(root, job, record)
            if not resume:
                run._remove_owned()
            run.write_json(CONFIG_FILE, record)
            yield run

    def path(self, name: str) -> str:
        """`<root>/<name>`, recorded as written by this job.

        Everything a job writes goes through a name from here (or one of
        the writers below), so a later fresh run removes exactly that.
        Folders that other libraries fill (Keras' backup, TensorBoard
        logs) are recorded whole by naming the folder.

        Args:
          name: a path relative to the root, e.g. "report.json".

        Returns:
          The full path; its parent folders exist.
        """
        if name not in self._owned:
            self._owned.add(name)
            write_json(
                self._marker_path,
                {"job": self.job, "owned": sorted(self._owned)},
            )
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def write_json(self, name: str, value: Any) -> str:
        """Writes `<root>/<name>` as JSON, atomically; returns its path."""
        path = self.path(name)
        write_json(path, value)
        return path

    def write_text(self, name: str, text: str) -> str:
        """Writes `<root>/<name>`, atomically; returns its path."""
        path = self.path(name)
        write_text(path, text)
        return path

    def write_npz(self, name: str, arrays: dict[str, np.ndarray]) -> str:
        """Writes `<root>/<name>` as a reproducible `.npz`; returns its path."""
        path = self.path(name)
        write_npz(path, arrays)
        return path

    def write_errors(self, skipped: Iterable[SkippedImage]) -> str:
        """Writes the skipped images as `errors.jsonl` (id, path, reason)."""
        lines = [json.dumps(dataclasses.asdict(s)) + "\n" for s in skipped]
        return self.write_text(ERRORS_FILE, "".join(lines))

    def cache(self, name: str) -> JsonlCache:
        """The append-only log `<root>/<name>` (see `JsonlCache`)."""
        return JsonlCache(self.path(name))

    def map_shards(
        self,
        name: str,
        num_items: int,
        shard_size: int,
        compute: Callable[[int, int], dict[str, np.ndarray]],
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Computes, or reads back, the results of each range of items.

        Every job's long work over a source runs through here: the items
        `[0, num_items)` are cut into ranges of `shard_size`, each range's
        arrays are kept as `shards/<name>-<start>-<stop>.npz`, and a
        resumed run reads the finished ones back. A damaged shard file is
        computed again.

        Args:
          name: the kind of work, part of the file names.
          num_items: how many items (images) there are.
          shard_size: items per shard (>= 1).
          compute: `(start, stop) -> arrays` of one range.
          progress: called with the number of items of each finished range.

        Yields:
          Each range's arrays, in order.

        Raises:
          ValueError: `shard_size` < 1.
        """
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        for start in range(0, num_items, shard_size):
            stop = min(start + shard_size, num_items)
            relative = os.path.join(
                SHARD_DIR, f"{name}-{start:09d}-{stop:09d}.npz"
            )
            path = self.path(relative)
            arrays = None
            if os.path.exists(path):
                try:
                    arrays = read_npz(path)
                except ValueError as e:
                    logging.warning("%s; computing it again", e)
            if arrays is None:
                arrays = compute(start, stop)
                write_npz(path, arrays)
            if progress is not None:
                progress(stop - start)
            yield arrays

    def _remove_owned(self) -> None:
        for name in sorted(self._owned):
            path = os.path.join(self.root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.remove(path)
        # Folders left empty by that (e.g. shards/) go too.
        for name in sorted(self._owned, key=len, reverse=True):
            folder = os.path.dirname(os.path.join(self.root, name))
            while folder != self.root and os.path.isdir(folder):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # Only when empty.
                folder = os.path.dirname(folder)
        self._owned = set()
        write_json(self._marker_path, {"job": self.job, "owned": []})


def count_errors(root: str) -> dict[str, int]:
    """Skipped images of `<root>/errors.jsonl` counted by reason kind."""
    counts: dict[str, int] = {}
    path = os.path.join(root, ERRORS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                kind = json.loads(line)["reason"].split(":", 1)[0]
                counts[kind] = counts.get(kind, 0) + 1
    return counts


def _read_marker(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    marker = read_json(path)
    return marker if isinstance(marker, dict) else {}


@contextlib.contextmanager
def _lock(root: str) -> Iterator[None]:
    path = os.path.join(root, _LOCK_FILE)
    with open(path, "a") as f:
        try:
            # Released by the kernel when the process ends, also on SIGKILL.
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise ValueError(
                f"{root}: another run is using this workdir; wait for it "
                "or use a new --workdir"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _flatten(settings: dict, prefix: str = "") -> dict:
    """Nested settings as `{"model.name": ...}`, to name what changed."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_resumable(
    path: str, previous: Any, current: dict, may_change: Sequence[str]
) -> None:
    if not isinstance(previous, dict) or "settings" not in previous:
        raise ValueError(
            f"{path}: not a config this version wrote; use a new --workdir "
            "or drop --resume"
        )
    old = _flatten(previous["settings"])
    new = _flatten(current["settings"])
    changed = sorted(
        k
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and k not in may_change
    )
    if changed:
        raise ValueError(
            f"{path}: cannot resume a run with other settings "
            f"({', '.join(changed)}); use a new --workdir or drop --resume"
        )
    if previous.get("data") != current["data"]:
        raise ValueError(
            f"{path}: cannot resume: the data changed since the run began "
            "(files added, removed or modified); use a new --workdir or "
            "drop --resume"
        )
    old_inputs, new_inputs = previous.get("inputs", {}), current["inputs"]
    changed = sorted(
        p
        for p in old_inputs.keys() | new_inputs.keys()
        if old_inputs.get(p) != new_inputs.get(p)
    )
    if changed:
        raise ValueError(
            f"{path}: cannot resume: input files changed since the run "
            f"began ({', '.join(changed)}); use a new --workdir or drop "
            "--resume"
        )
