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

Every file goes through one atomic writer (`files.atomic_path`): a reader, or a
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
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from compression_helps.core import files, progress

__all__ = [
    "CONFIG_FILE",
    "ERRORS_FILE",
    "SHARD_DIR",
    "JsonlCache",
    "RunDir",
    "SkippedImage",
    "changed_settings",
    "count_errors",
    "count_kinds",
    "read_errors",
]

CONFIG_FILE = "config.json"
ERRORS_FILE = "errors.jsonl"
SHARD_DIR = "shards"
_MARKER_FILE = ".run.json"  # Which job made the folder, and what it wrote.
_LOCK_FILE = ".lock"


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

    def __init__(self, path: str, progress: Callable[..., None] | None = None):
        """Reads the records already in `path`, if any.

        Args:
          path: the log.
          progress: called as `progress(1, reused=...)` for each record
            `get_or_compute` returns (e.g. `progress.Progress.add`).
        """
        self.path = path
        self._progress = progress
        self.records: dict[str, dict] = {}
        self.computed = self.replayed = 0
        for record in files.read_jsonl(path):
            if isinstance(record, dict) and "key" in record:
                self.records[record["key"]] = record

    def get_or_compute(self, key: str, compute: Callable[[], dict]) -> dict:
        """The logged record of `key`, or `compute()`'s, appended to the log."""
        record = self.records.get(key)
        if record is not None:
            self.replayed += 1
            if self._progress is not None:
                self._progress(1, reused=True)
            return record
        record = {**compute(), "key": key}
        self.computed += 1
        self.records[key] = record
        files.append_jsonl(self.path, record)
        if self._progress is not None:
            self._progress(1)
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
        owned = _read_marker(self._marker_path).get("owned")
        # Names only; anything else in an edited marker is not ours.
        owned = owned if isinstance(owned, list) else []
        self._owned = {n for n in owned if isinstance(n, str)}

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
        flag: str = "--workdir",
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
          flag: the flag that names the folder, for every message (a job
            whose folder is `--out` passes that).

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
                f"{root}: cannot create the {flag} folder ({e.strerror})"
            ) from None
        if not os.access(root, os.W_OK):
            raise PermissionError(f"{root}: {flag} folder is not writable")
        marker_path = os.path.join(root, _MARKER_FILE)
        marker = _check_owner(root, job, flag)
        with _lock(root, flag):
            if not marker:
                files.write_json(marker_path, {"job": job, "owned": []})
            record = {
                "job": job,
                "settings": json.loads(
                    json.dumps(dataclasses.asdict(settings))
                ),
                "data": data,
                "inputs": files.digest_inputs(inputs),
            }
            config_path = os.path.join(root, CONFIG_FILE)
            if resume and os.path.exists(config_path):
                _check_resumable(
                    config_path,
                    files.read_json(config_path),
                    record,
                    may_change,
                    flag,
                )
            run = cls(root, job, record)
            if not resume or not os.path.exists(config_path):
                # Nothing to check results against: none are trusted.
                run._remove_owned()
            run.write_json(CONFIG_FILE, record)
            yield run

    @classmethod
    @contextlib.contextmanager
    def reopen(
        cls, root: str, job: str, flag: str = "--workdir"
    ) -> Iterator[RunDir]:
        """Opens a finished run's folder to rewrite its reports.

        Nothing is checked against the inputs (they may be gone): the
        folder must be the job's, hold its config, and not be in use.

        Args:
          root: the `--workdir` of an earlier run.
          job: the job's name.
          flag: the flag that names the folder, for every message.

        Yields:
          The `RunDir`, locked until the block ends.

        Raises:
          FileNotFoundError: no such run folder.
          ValueError: another job's folder, a damaged config, or in use.
        """
        config_path = os.path.join(root, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"{root}: no {job} run here (no {CONFIG_FILE})"
            )
        _check_owner(root, job, flag)
        with _lock(root, flag):
            record = files.read_json(config_path)
            if not isinstance(record, dict) or record.get("job") != job:
                raise ValueError(f"{config_path}: not a config of {job}")
            yield cls(root, job, record)

    def path(self, name: str) -> str:
        """`<root>/<name>`, recorded as written by this job.

        Everything a job writes goes through a name from here (or one of
        the writers below), so a later fresh run removes exactly that.
        Folders that other libraries fill (Keras' backup, TensorBoard
        logs) are recorded whole by naming the folder.

        Args:
          name: a path relative to the root, e.g. "report.json"; a glob
            pattern records every file it matches (`map_shards`' shards).

        Returns:
          The full path; its parent folders exist.
        """
        if name not in self._owned:
            self._owned.add(name)
            files.write_json(
                self._marker_path,
                {"job": self.job, "owned": sorted(self._owned)},
            )
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def write_json(self, name: str, value: Any) -> str:
        """Writes `<root>/<name>` as JSON, atomically; returns its path."""
        path = self.path(name)
        files.write_json(path, value)
        return path

    def write_text(self, name: str, text: str) -> str:
        """Writes `<root>/<name>`, atomically; returns its path."""
        path = self.path(name)
        files.write_text(path, text)
        return path

    def write_npz(self, name: str, arrays: dict[str, np.ndarray]) -> str:
        """Writes `<root>/<name>` as a reproducible `.npz`; returns its path."""
        path = self.path(name)
        files.write_npz(path, arrays)
        return path

    def write_errors(self, skipped: Iterable[SkippedImage]) -> str:
        """Writes the skipped images as `errors.jsonl` (id, path, reason)."""
        lines = [json.dumps(dataclasses.asdict(s)) + "\n" for s in skipped]
        return self.write_text(ERRORS_FILE, "".join(lines))

    def cache(
        self, name: str, progress: Callable[..., None] | None = None
    ) -> JsonlCache:
        """The append-only log `<root>/<name>` (see `JsonlCache`)."""
        return JsonlCache(self.path(name), progress)

    def map_shards(
        self,
        name: str,
        num_items: int,
        shard_size: int,
        compute: Callable[
            [int, int, Callable[[int], None]], dict[str, np.ndarray]
        ],
        progress: progress.Progress | None = None,
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
          compute: `(start, stop, report) -> arrays` of one range; it calls
            `report(n)` as each batch of `n` items finishes, so progress
            moves within the range (items it never reports, e.g. skipped
            images, are counted when it returns).
          progress: counts every range's items: per `report` while one is
            computed, all at once for one read back.

        Yields:
          Each range's arrays, in order.

        Raises:
          ValueError: `shard_size` < 1.
        """
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        # One record for all of them: the marker is not rewritten per shard.
        folder = os.path.dirname(self.path(f"{SHARD_DIR}/{name}-*.npz"))
        for start in range(0, num_items, shard_size):
            stop = min(start + shard_size, num_items)
            path = os.path.join(folder, f"{name}-{start:09d}-{stop:09d}.npz")
            arrays = None
            if os.path.exists(path):
                try:
                    arrays = files.read_npz(path)
                except ValueError as e:
                    logging.warning("%s; computing it again", e)
            if arrays is None:
                part = (
                    progress.part(stop - start)
                    if progress is not None
                    else contextlib.nullcontext(lambda n: None)
                )
                with part as report:
                    arrays = compute(start, stop, report)
                    files.write_npz(path, arrays)
            elif progress is not None:
                progress.add(stop - start, reused=True)
            yield arrays

    def _remove_owned(self) -> None:
        # config.json first: a removal cut short leaves no config, and a
        # resume without one starts afresh. The names come from a file
        # anyone may edit: `files.remove_within` removes only those inside.
        names = sorted(self._owned, key=lambda n: (n != CONFIG_FILE, n))
        files.remove_within(self.root, names, patterns=True)
        self._owned = set()
        files.write_json(self._marker_path, {"job": self.job, "owned": []})


def read_errors(root: str) -> list[SkippedImage]:
    """The skipped images of `<root>/errors.jsonl` (none if it is absent)."""
    path = os.path.join(root, ERRORS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [SkippedImage(**json.loads(line)) for line in f]


def count_kinds(skipped: Iterable[SkippedImage]) -> dict[str, int]:
    """Skipped images counted by reason kind, in order of first appearance."""
    counts: dict[str, int] = {}
    for image in skipped:
        counts[image.kind] = counts.get(image.kind, 0) + 1
    return counts


def count_errors(root: str) -> dict[str, int]:
    """Skipped images of `<root>/errors.jsonl` counted by reason kind."""
    return count_kinds(read_errors(root))


def _check_owner(root: str, job: str, flag: str) -> dict:
    """The folder's marker; refuses a folder of users' or another job's."""
    marker = _read_marker(os.path.join(root, _MARKER_FILE))
    # A lock file, or a temporary file of a write killed before the marker,
    # is ours too.
    foreign = [
        name
        for name in os.listdir(root)
        if name != _LOCK_FILE and not name.startswith(".tmp-")
    ]
    if not marker and foreign:
        raise ValueError(
            f"{root}: folder holds files this project did not write; "
            f"use a new or empty {flag}"
        )
    if marker and marker.get("job") != job:
        raise ValueError(
            f"{root}: {flag} folder of a {marker.get('job')} run, not "
            f"{job}; use a new {flag}"
        )
    return marker


def _read_marker(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    marker = files.read_json(path)
    return marker if isinstance(marker, dict) else {}


@contextlib.contextmanager
def _lock(root: str, flag: str) -> Iterator[None]:
    path = os.path.join(root, _LOCK_FILE)
    with open(path, "a") as f:
        try:
            # Released by the kernel when the process ends, also on SIGKILL.
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise ValueError(
                f"{root}: another run is using this {flag} folder; wait "
                f"for it or use a new {flag}"
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


def changed_settings(
    old: dict, new: dict, may_change: Sequence[str] = ()
) -> list[str]:
    """The settings that differ between two records, by dotted name.

    Args:
      old: nested settings, e.g. a `config.json`'s "settings".
      new: the same kind of record.
      may_change: dotted names not to report.

    Returns:
      Sorted names such as `model.name` whose values differ (or that one
      record lacks).
    """
    old, new = _flatten(old), _flatten(new)
    return sorted(
        k
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and k not in may_change
    )


def _check_resumable(
    path: str,
    previous: Any,
    current: dict,
    may_change: Sequence[str],
    flag: str,
) -> None:
    again = f"use a new {flag} or drop --resume"
    if not isinstance(previous, dict) or "settings" not in previous:
        raise ValueError(f"{path}: not a config this version wrote; {again}")
    changed = changed_settings(
        previous["settings"], current["settings"], may_change
    )
    if changed:
        raise ValueError(
            f"{path}: cannot resume a run with other settings "
            f"({', '.join(changed)}); {again}"
        )
    if previous.get("data") != current["data"]:
        raise ValueError(
            f"{path}: cannot resume: the data changed since the run began "
            f"(files added, removed or modified); {again}"
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
            f"began ({', '.join(changed)}); {again}"
        )
