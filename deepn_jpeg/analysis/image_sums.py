"""Running sums over images, one resumable shard at a time.

The one mechanism of the jobs that sum something per image: the DCT band
statistics (`deepn_jpeg.jobs.design`) and the band sensitivities
(`deepn_jpeg.jobs.sensitivity`). The images summed are all of a source or
a stratified sample of them (`chosen_indices`); each shard's sums are kept
by the run folder (`rundir.RunDir.map_shards`), so a killed run resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from compression_helps.core import progress, rundir
from compression_helps.sources import datasets

__all__ = ["accumulate", "chosen_indices", "select_per_class"]


def select_per_class(
    labels: np.ndarray, per_class: int, seed: int = 0
) -> np.ndarray:
    """Stratified sample: at most `per_class` images of each label.

    Uniform without replacement within each class, seeded; every unlabelled
    image (label -1) is kept. Works on labels alone, so no image is read to
    choose.

    Args:
      labels: `[N]` int labels, -1 for unknown.
      per_class: maximum images per label (>= 1).
      seed: sampling seed.

    Returns:
      The chosen indices, sorted.

    Raises:
      ValueError: per_class < 1.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = [np.flatnonzero(labels < 0)]
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        if len(members) > per_class:
            members = rng.choice(members, per_class, replace=False)
        chosen.append(members)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def chosen_indices(
    source: datasets.Source, per_class: int | None, seed: int
) -> np.ndarray:
    """`[M]` sorted indices of the images a job analyses.

    Args:
      source: the images.
      per_class: at most this many per label (`select_per_class`); None: all.
      seed: the sampling seed.
    """
    if per_class is None:
        return np.arange(source.count(), dtype=np.int64)
    return select_per_class(source.labels(), per_class, seed)


def accumulate(
    run_dir: rundir.RunDir,
    shard_name: str,
    label: str,
    source: datasets.Source,
    chosen: np.ndarray,
    shard_size: int,
    compute: Callable[[tf.data.Dataset, Callable[..., None]], tuple[Any, Any]],
    work: Callable[[dict], Any],
    empty: Any,
    require_label: bool = False,
    verbose: bool = True,
) -> tuple[Any, list[rundir.SkippedImage]]:
    """Running sums over the chosen images, one resumable shard at a time.

    The one mechanism of the jobs that sum something per image (the DCT
    statistics, the band sensitivities): each shard of `chosen` is summed
    by `compute`, the images it could not use are diagnosed one by one
    (`datasets.diagnose`, re-running `work`), and the shards' sums merge.

    Args:
      run_dir: the run's folder (`map_shards`).
      shard_name: the shards' name (`shards/<shard_name>-<start>-<stop>`).
      label: what is summed, for the progress bar.
      source: the images.
      chosen: `[M]` their indices to sum.
      shard_size: images per shard (the unit of resuming).
      compute: `(dataset, progress) -> (sums, used indices)`.
      work: an eager re-run of one example, raising what made it unusable.
      empty: the sums of no image (`merge`, `to_arrays`, `from_arrays`).
      require_label: an unlabelled image is unusable too.
      verbose: show a progress bar.

    Returns:
      The merged sums and the images skipped.
    """

    def compute_shard(start: int, stop: int, report) -> dict[str, np.ndarray]:
        indices = chosen[start:stop]
        sums, done = compute(source.select(indices), report)
        missing = sorted(set(indices.tolist()) - set(done.tolist()))
        skipped = [
            datasets.diagnose(source, i, work, require_label=require_label)
            for i in missing
        ]
        return {
            **sums.to_arrays(),
            "skipped": rundir.SkippedImage.to_array(skipped),
        }

    total, skipped = empty, []
    with progress.Progress(len(chosen), "image", label, verbose=verbose) as bar:
        for arrays in run_dir.map_shards(
            shard_name, len(chosen), shard_size, compute_shard, bar
        ):
            total = total.merge(type(empty).from_arrays(arrays))
            skipped.extend(rundir.SkippedImage.from_array(arrays["skipped"]))
    return total, skipped
