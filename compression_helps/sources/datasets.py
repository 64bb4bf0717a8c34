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
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from compression_helps.core import checks, files, rundir
from compression_helps.sources import folders, guard, splits, tfds_source

__all__ = [
    "DataConfig",
    "Source",
    "diagnose",
    "load",
    "sample",
    "split",
    "subset",
    "usable",
]

_TFDS_PREFIX = "tfds:"


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
        # A part of a split (`split`) may hold its whole source's ids.
        if self.known_ids is None or len(self.known_ids) != self.num_examples:
            return None
        return str(self.known_ids[index])

    def path_of(self, example_id: str) -> str:
        """Where an example comes from: its file, or source and id."""
        if self.root is not None:
            return os.path.join(self.root, example_id)
        return f"{self.description}/{example_id}"


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
    return Source(**folders.open_folder(data, limit, limits))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images a job reads; part of every job's config.

    Attributes:
      name: an image folder or `tfds:<name>[:<split>]`; empty: the ImageNet
        sample images (downloaded once).
      limit: only the first `limit` images (in a fixed order).
      tfds_data_dir: TFDS data directory.
      split: all images, or one part of a seeded random split
        (`split`): jobs that learn from images use "fit", their
        evaluation "heldout"; cross-fitting uses "fit:<k>/<K>" (all but
        fold k of K) and "heldout:<k>/<K>" (fold k).
      split_seed: the seed of that split.
      sample: at most this many images of the split part, a random subset
        seeded by `split_seed` (`sample`); None: all of them.
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
        name = self.name or folders.sample_images_dir()
        if not name.startswith(_TFDS_PREFIX):
            name = os.path.normpath(name)
        return dataclasses.replace(self, name=name)

    def check(self) -> None:
        """Checks the settings without reading any image.

        Whether the folder or TFDS data set exists is left to `load`, which
        finds out quickly.

        Raises:
          ValueError: a limit below 1 (a negative slice end would silently
            drop images) or an unknown split.
        """
        if self.limit is not None:
            checks.integer(
                "limit", self.limit, 1, note="leave it out for all images"
            )
        splits.check_part(self.split)
        if self.sample is not None:
            checks.integer(
                "sample", self.sample, 1, note="leave it out for all images"
            )
        checks.integer("split_seed", self.split_seed)

    def load(self) -> Source:
        """The source (`load` within `max_pixels`, `split`, `sample`)."""
        return self.part_of(self.load_whole())

    def whole(self) -> DataConfig:
        """The same images before `split` and `sample`."""
        return dataclasses.replace(self, split="all", sample=None)

    def load_whole(self) -> Source:
        """The source of `whole()`: every image, within `max_pixels`."""
        return load(
            self.resolved().name,
            self.limit,
            self.tfds_data_dir,
            guard.Limits(max_pixels=self.max_pixels),
        )

    def part_of(self, whole: Source) -> Source:
        """This config's `split` part, then `sample`, of `load_whole()`'s.

        A job given an opened source (`engine.job.Given`) takes its part
        here, so the images it reads are always the ones its config names.
        """
        part = split(whole, self.split, self.split_seed)
        if self.sample is None:
            return part
        return sample(part, self.sample, self.split_seed)


def split(source: Source, part: str, seed: int = 0) -> Source:
    """One part of a seeded random split of a source's examples.

    Jobs that learn something from images (DeepN-JPEG table statistics, a
    table search) use the "fit" half; their evaluation uses the "heldout"
    half, which they never see. The rule depends only on the number of
    examples and the seed (`splits.heldout_mask`): of a
    `np.random.default_rng(seed)` permutation of the indices, the first
    `N // 2` are "fit", the others "heldout". Each part is a `subset`.

    Args:
      source: examples with a known count.
      part: one of `splits.SPLITS` ("all" returns `source` itself), or a
        cross-fitting part "heldout:<k>/<K>" (fold k of `splits.fold_mask`) or
        "fit:<k>/<K>" (the other K-1 folds).
      seed: the permutation's seed.

    Returns:
      The part as a `Source`; its example `i` is the `i`-th (in source
      order) of the part's examples, with the same id, file and label.

    Raises:
      ValueError: unknown part, unknown or too few examples.
    """
    parsed = splits.check_part(part)
    if parsed is None:
        return source
    side, fold, num_folds = parsed
    total = source.num_examples
    if total is None or total < num_folds:
        raise ValueError(
            f"{source.description}: cannot split {total} examples in "
            f"{num_folds}"
        )
    if fold:
        is_heldout = splits.fold_mask(total, num_folds, fold, seed)
        name = f"{side} part of fold {fold}/{num_folds}"
    else:
        is_heldout = splits.heldout_mask(total, total - total // 2, seed)
        name = f"{side} half"
    wanted = is_heldout if side == "heldout" else ~is_heldout
    return subset(source, np.flatnonzero(wanted), f"{name}, seed {seed}")


def sample(source: Source, size: int, seed: int = 0) -> Source:
    """A seeded random subset of at most `size` of a source's examples.

    The same rule as the splits (`splits.heldout_mask`), so a sample of a split
    part is reproducible from the settings alone.

    Args:
      source: examples with a known count.
      size: the most examples kept; a smaller source is returned whole.
      seed: the permutation's seed.

    Returns:
      The subset (`subset`), or `source` itself.

    Raises:
      ValueError: an unknown number of examples.
    """
    total = source.num_examples
    if total is None:
        raise ValueError(f"{source.description}: cannot sample, size unknown")
    if total <= size:
        return source
    chosen = np.flatnonzero(splits.heldout_mask(total, size, seed))
    return subset(source, chosen, f"{size} sampled, seed {seed}")


def subset(source: Source, indices: np.ndarray, name: str) -> Source:
    """The examples at sorted `indices` of a source, re-indexed from 0.

    The subset keeps the source's order and is re-indexed from 0, so it can
    be sharded and resumed like any source.

    Args:
      source: the examples.
      indices: `[M]` increasing source indices.
      name: what the subset is, appended to the source's description.

    Returns:
      The subset as a `Source`; its example `i` is the source's example
      `indices[i]`, with the same id, file and label.
    """
    indices = np.asarray(indices, np.int64)  # [M] source indices
    lookup = tf.constant(indices)

    def renumber(example):
        position = tf.searchsorted(
            lookup, example["index"][None], out_type=tf.int64
        )
        return {**example, "index": position[0]}

    def read_indices(positions: np.ndarray) -> tf.data.Dataset:
        wanted = indices[np.asarray(positions, np.int64)]
        return source.select(wanted).map(renumber)

    def read(start: int, stop: int | None) -> tf.data.Dataset:
        stop = len(indices) if stop is None else min(stop, len(indices))
        return read_indices(np.arange(start, max(start, stop)))

    known = source.known_labels
    # Same root and data identity; the subset is in the run's settings.
    return dataclasses.replace(
        source,
        read=read,
        num_examples=len(indices),
        description=f"{source.description} ({name})",
        known_labels=None if known is None else known[indices],
        known_ids=None
        if source.known_ids is None
        else source.known_ids[indices],
        read_indices=read_indices,
    )


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
        detail = files.first_line(e) if str(e) else "no such example"
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
        reason = f"cannot decode: {files.first_line(e)}"
        return rundir.SkippedImage(image_id, path, reason)
    # Dropped in tf.data but fine when re-run alone (e.g. out of memory).
    return rundir.SkippedImage(image_id, path, "failed: in tf.data only")
