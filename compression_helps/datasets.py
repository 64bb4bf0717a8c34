"""Labelled image sources: folders named by ImageNet wnid, TFDS, the samples.

Every source yields the same example dict, so the rest of the project never
knows where images come from:

    {"index": tf.int64, "id": tf.string, "image_bytes": tf.string,
     "label": tf.int32, "error": tf.string}

Every file passes `guard` before anything decodes it: `error` is "" for a
file that may be decoded, else why not (a FIFO, a decompression bomb, ...),
and `image_bytes` is then empty. Pipelines keep only `usable` examples;
`diagnose` reports the error as the reason. `id` is the path relative to the
folder (a name that is not UTF-8 shown with backslash escapes), or the TFDS
file name. `image_bytes` is the file exactly as stored: candidate 0 of SPEC.md
("Candidates and sizes") is these bytes, never a re-encoding. `label` is the
ImageNet class index (sorted-wnid order, the order of Keras' and TFDS'
ImageNet classifiers) or -1 when the file names no known wnid. `index` is
the example's position in the source, which stays with it through
pipelines that drop bad images or reorder (the tf.data service).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from compression_helps import guard, rundir, splits, tfds_source

__all__ = [
    "DataConfig",
    "IMAGE_EXTENSIONS",
    "SAMPLE_IMAGES_URL",
    "Source",
    "diagnose",
    "folder_examples",
    "load",
    "sample_images_dir",
    "usable",
    "wnids",
]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".gif", ".bmp", ".webp")
# One image per ImageNet class, about 100 MB (used by `make demo`).
SAMPLE_IMAGES_URL = (
    "https://github.com/EliSchwartz/imagenet-sample-images/archive/"
    "refs/heads/master.zip"
)
_WNID = re.compile(r"n\d{8}")
_TFDS_PREFIX = "tfds:"


@functools.cache
def wnids() -> tuple[str, ...]:
    """The 1000 ImageNet wnids; position = class index."""
    text = (
        importlib.resources.files("compression_helps")
        .joinpath("data/imagenet_classes.tsv")
        .read_text()
    )
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    # The file is in index order; index = position in sorted wnid order.
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    return tuple(r[1] for r in rows)


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(wnids())}


def _label_of(relpath: str) -> int:
    """Class of `<wnid>/<any>` or `<wnid>_<any>`; -1 if it names none."""
    parts = relpath.split(os.sep)
    candidates = [parts[-2]] if len(parts) > 1 else []
    candidates.append(parts[-1].split("_", 1)[0])
    for name in candidates:
        if _WNID.fullmatch(name) and name in _wnid_index():
            return _wnid_index()[name]
    return -1


def folder_examples(folder: str) -> list[tuple[str, int]]:
    """Image files under `folder` with their labels, in sorted path order.

    Args:
      folder: a directory of `<wnid>/<any>.JPEG` or `<wnid>_<any>.JPEG` files
        (any of `IMAGE_EXTENSIONS`, any depth).

    Returns:
      `(path, label)` pairs; label -1 where the path names no ImageNet wnid.
      A name that is not valid UTF-8 is held with surrogate escapes, as
      `os.fsdecode` gives it; `os.fsencode(path)` is the file's real name.

    Raises:
      FileNotFoundError: `folder` is not a directory.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a directory")
    examples = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, name)
                examples.append(
                    (path, _label_of(os.path.relpath(path, folder)))
                )
    return examples


@dataclasses.dataclass(frozen=True)
class Source:
    """A data set of example dicts (see module docstring).

    Attributes:
      read: `(start, stop) -> tf.data.Dataset` of the examples with index in
        `[start, stop)` (stop None: to the end), in a fixed order; reading a
        range costs only that range, so runs can be sharded and resumed.
      num_examples: the number of examples, None if unknown.
      description: where the examples come from, for messages.
      root: the folder that example ids are relative to, if any.
      known_labels: `[N]` labels when known without reading the images.
      read_indices: `(indices) -> tf.data.Dataset` reading only those
        examples, where the source can; else `select` filters a range.
      fingerprint: the identity of the data, JSON-serialisable: for a
        folder, a digest of its files' names, sizes and modification times;
        for TFDS, name, split, version and size. Resumed runs check it.
      known_ids: `[N]` str ids when known without reading the images, so
        that even an example that cannot be read is named by its own id.
    """

    read: Callable[[int, int | None], tf.data.Dataset]
    num_examples: int | None
    description: str
    root: str | None = None
    known_labels: np.ndarray | None = None
    read_indices: Callable[[np.ndarray], tf.data.Dataset] | None = None
    fingerprint: Any = None
    known_ids: np.ndarray | None = None

    @property
    def dataset(self) -> tf.data.Dataset:
        """All examples."""
        return self.read(0, None)

    def count(self) -> int:
        """The number of examples (one pass over them if not known)."""
        if self.num_examples is not None:
            return self.num_examples
        known = int(self.dataset.cardinality())
        if known >= 0:  # Negative: unknown (or infinite).
            return known
        return int(self.dataset.reduce(0, lambda n, _: n + 1))

    def labels(self) -> np.ndarray:
        """`[N]` int32 labels, in index order (one pass if not known)."""
        if self.known_labels is not None:
            return self.known_labels
        labels = self.dataset.map(lambda e: e["label"])
        return np.fromiter(labels.as_numpy_iterator(), np.int32)

    def select(self, indices: Sequence[int]) -> tf.data.Dataset:
        """The examples with the given indices, in increasing index order."""
        indices = np.unique(np.asarray(indices, np.int64))
        if self.read_indices is not None:
            return self.read_indices(indices)
        if not len(indices):
            return self.read(0, 0)
        # Read only the covering range; keep the wanted indices. A mask
        # lookup costs O(1) per example (millions of indices for a split of
        # the ImageNet training set).
        first, stop = int(indices[0]), int(indices[-1]) + 1
        mask = np.zeros(stop - first, bool)
        mask[indices - first] = True
        wanted = tf.constant(mask)
        return self.read(first, stop).filter(
            lambda e: wanted[e["index"] - first]
        )

    def id_of(self, index: int) -> str | None:
        """An example's id without reading it; None where not known."""
        # A part of a split (`splits.split`) may hold its whole source's ids.
        if self.known_ids is None or len(self.known_ids) != self.num_examples:
            return None
        return str(self.known_ids[index])

    def path_of(self, example_id: str) -> str:
        """Where an example comes from: its file, or source and id."""
        if self.root is not None:
            return os.path.join(self.root, example_id)
        return f"{self.description}/{example_id}"


def _check_files(
    paths: Sequence[bytes], ids: Sequence[str], limits: guard.Limits
) -> tuple[dict, np.ndarray]:
    """One `os.stat` per file: the folder's identity and each file's problem.

    Returns:
      The fingerprint (a digest of the files' names, sizes and modification
      times) and `[N]` str `guard.stat_problem` reasons ("" if fine).
    """
    digest = hashlib.sha256()
    problems = []
    for path, image_id in zip(paths, ids, strict=True):
        try:
            info = os.stat(path)  # Never blocks, not even on a FIFO.
            size, mtime = info.st_size, info.st_mtime_ns
            problems.append(guard.stat_problem(info, path, limits))
        except OSError as e:
            size = mtime = -1
            problems.append(f"unreadable file: {e.strerror}")
        digest.update(f"{image_id}\0{size}\0{mtime}\0".encode())
    fingerprint = {"files": len(ids), "sha256": digest.hexdigest()}
    return fingerprint, np.array(problems, dtype=str)


def _from_folder(
    folder: str, limit: int | None, limits: guard.Limits
) -> Source:
    examples = folder_examples(folder)[:limit]
    if not examples:
        raise FileNotFoundError(f"{folder}: no image files found")
    # Opened by the bytes of their names, so that a name that is not UTF-8
    # opens too; shown as valid UTF-8, undecodable bytes as `\xe9`.
    paths = np.array([os.fsencode(path) for path, _ in examples])
    relative = [os.fsencode(os.path.relpath(p, folder)) for p, _ in examples]
    ids = np.array([r.decode("utf-8", "backslashreplace") for r in relative])
    labels = np.array([label for _, label in examples], np.int32)
    fingerprint, problems = _check_files(paths, ids, limits)

    def example(index, id_, path, label, problem):
        # A refused file is never opened; a read one is checked before any
        # decode, by TF ops (they also run on tf.data service workers).
        image_bytes = tf.cond(
            problem == "", lambda: tf.io.read_file(path), lambda: ""
        )
        error = tf.where(
            problem == "",
            guard.tf_header_problem(image_bytes, limits, guard.FLAG_HINT),
            problem,
        )
        return {
            "index": index,
            "id": id_,
            # Emptied when refused: nothing downstream can decode a bomb.
            "image_bytes": tf.where(error == "", image_bytes, ""),
            "label": label,
            "error": error,
        }

    def read_indices(indices: np.ndarray) -> tf.data.Dataset:
        indices = np.asarray(indices, np.int64)
        dataset = tf.data.Dataset.from_tensor_slices(
            (
                indices,
                ids[indices],
                paths[indices],
                labels[indices],
                problems[indices],
            )
        )
        return dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE)

    def read(start: int, stop: int | None) -> tf.data.Dataset:
        return read_indices(
            np.arange(start, len(paths) if stop is None else stop)
        )

    return Source(
        read,
        len(paths),
        f"folder {folder}",
        root=folder,
        known_labels=labels,
        read_indices=read_indices,
        fingerprint=fingerprint,
        known_ids=ids,
    )


def load(
    data: str,
    limit: int | None = None,
    tfds_data_dir: str | None = None,
    limits: guard.Limits = guard.DEFAULT_LIMITS,
) -> Source:
    """Opens a data source.

    Args:
      data: a folder path, or `tfds:<name>[:<split>]` for any TFDS image
        classification data set with ImageNet labels, e.g.
        `tfds:imagenet2012:validation` (manual download, see README) or
        `tfds:imagenet_v2`.
      limit: keep only the first `limit` examples (in a fixed order).
      tfds_data_dir: TFDS data directory (default: TFDS' own).
      limits: what a file may be (`guard`); others are skipped unread.

    Returns:
      The `Source`.

    Raises:
      FileNotFoundError: a folder that does not exist or holds no images,
        or a TFDS data set whose manual download is missing.
      OSError: a TFDS data set that is not prepared and cannot be
        downloaded (the message says what to fetch and where to put it).
      ValueError: TFDS knows no such data set.
    """
    if data.startswith(_TFDS_PREFIX):
        return Source(
            **tfds_source.open_split(
                data[len(_TFDS_PREFIX) :], limit, tfds_data_dir, limits
            )
        )
    return _from_folder(data, limit, limits)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images a job reads; part of every job's config.

    Attributes:
      name: an image folder or `tfds:<name>[:<split>]`; empty: the ImageNet
        sample images (downloaded once).
      limit: only the first `limit` images (in a fixed order).
      tfds_data_dir: TFDS data directory.
      split: all images, or one part of a seeded random split
        (`splits.split`): jobs that learn from images use "fit", their
        evaluation "heldout"; cross-fitting uses "fit:<k>/<K>" (all but
        fold k of K) and "heldout:<k>/<K>" (fold k).
      split_seed: the seed of that split.
      sample: at most this many images of the split part, a random subset
        seeded by `split_seed` (`splits.sample`); None: all of them.
      max_pixels: the most pixels (width x height) an image's header may
        claim; larger images (decompression bombs) are skipped undecoded.
    """

    name: str = ""
    limit: int | None = None
    tfds_data_dir: str | None = None
    split: str = "all"
    split_seed: int = 0
    sample: int | None = None
    max_pixels: int = guard.MAX_PIXELS

    def resolved(self) -> DataConfig:
        """The same config, the sample images' folder filled in.

        A folder path is normalised: a resumed run may spell it `dir/`.
        """
        name = self.name or sample_images_dir()
        if not name.startswith(_TFDS_PREFIX):
            name = os.path.normpath(name)
        return dataclasses.replace(self, name=name)

    def load(self) -> Source:
        """The source (`load` within `max_pixels`, `split`, `sample`)."""
        source = load(
            self.resolved().name,
            self.limit,
            self.tfds_data_dir,
            guard.Limits(max_pixels=self.max_pixels),
        )
        part = splits.split(source, self.split, self.split_seed)
        if self.sample is None:
            return part
        return splits.sample(part, self.sample, self.split_seed)


def usable(
    example: dict[str, tf.Tensor], require_label: bool = True
) -> tf.Tensor:
    """Whether a pipeline may use an example; for `Dataset.filter`.

    Args:
      example: an example dict (see module docstring).
      require_label: an unknown label (-1) makes it unusable too.

    Returns:
      Scalar tf.bool: the guard found nothing wrong (and it has a label).
      Pipelines drop the others; `diagnose` says why.
    """
    fine = tf.equal(example.get("error", tf.constant("")), "")
    if require_label:
        fine = tf.logical_and(fine, example["label"] >= 0)
    return fine


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    line = message.strip().splitlines()[0] if message.strip() else repr(error)
    # Drop TF's op-location decorations: "{{function_node ...}} " in front,
    # " [Op:...]" behind; the reason is the library's own message.
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
    # And tf.data's "Error in user-defined function ... Iterator::...: ".
    line = re.sub(
        r"^Error in user-defined function .*? Iterator::\S*: ", "", line
    )
    return line.split(" [Op:")[0].strip()


def diagnose(
    source: Source,
    index: int,
    work: Callable[[dict[str, tf.Tensor]], Any],
    require_label: bool = True,
) -> rundir.SkippedImage:
    """Re-runs one dropped example's work eagerly: why it failed.

    Pipelines drop failing examples (`Dataset.ignore_errors`) to keep going;
    this finds the reason for each one they dropped. Every job records its
    skipped images through here.

    Args:
      source: the examples.
      index: the example's index in `source`.
      work: the per-example function of the pipeline; raises on bad input.
      require_label: an unknown label (-1) is a reason to skip.

    Returns:
      The skip record; "failed: in tf.data only" when the example works
      alone (e.g. the pipeline ran out of memory).
    """
    try:
        example = next(iter(source.read(index, index + 1)))
    except (tf.errors.OpError, StopIteration) as e:
        # Named by its own id where the source knows it unread (a folder).
        name = source.id_of(index) or f"#{index}"
        detail = _first_line(e) if str(e) else "no such example"
        reason = f"unreadable file: {detail}"
        return rundir.SkippedImage(name, source.path_of(name), reason)
    image_id = example["id"].numpy().decode("utf-8", "backslashreplace")
    path = source.path_of(image_id)
    error = example.get("error", tf.constant("")).numpy().decode()
    if error:  # The guard's reason, found before any decode.
        return rundir.SkippedImage(image_id, path, error)
    if require_label and int(example["label"]) < 0:
        reason = "no ImageNet label: the file name has no known wnid"
        return rundir.SkippedImage(image_id, path, reason)
    if len(example["image_bytes"].numpy()) == 0:
        return rundir.SkippedImage(image_id, path, "empty file: 0 bytes")
    try:
        work(example)
    except tf.errors.OpError as e:
        reason = f"cannot decode: {_first_line(e)}"
        return rundir.SkippedImage(image_id, path, reason)
    # Dropped in tf.data but fine when re-run alone (e.g. out of memory).
    return rundir.SkippedImage(image_id, path, "failed: in tf.data only")


def sample_images_dir(
    url: str = SAMPLE_IMAGES_URL, cache_dir: str | None = None
) -> str:
    """Downloads (once, cached by Keras) the ImageNet sample images.

    Args:
      url: zip archive of the GitHub repository
        `EliSchwartz/imagenet-sample-images` (one image per class).
      cache_dir: Keras cache directory (default `~/.keras`, or KERAS_HOME).

    Returns:
      The folder holding the extracted images.

    Raises:
      ConnectionError: the archive is not cached and cannot be downloaded.
    """
    # Imported here so that importing this module stays light.
    import keras

    try:
        path = keras.utils.get_file(
            "imagenet-sample-images.zip",
            origin=url,
            extract=True,
            cache_subdir="datasets",
            cache_dir=cache_dir,
        )
    except Exception as e:  # Keras raises bare Exception on URL errors.
        raise ConnectionError(
            f"cannot download the ImageNet sample images from {url} ({e}); "
            "point DATA at a folder of <wnid>_<name>.JPEG files instead, "
            "e.g. `DATA=/path/to/images make demo`"
        ) from None
    return path
