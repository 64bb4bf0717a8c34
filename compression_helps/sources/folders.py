"""Image folders as sources, and the ImageNet sample images.

A folder's images are its files with an image extension, at any depth, in
sorted path order; a file's label is the ImageNet class its path names
(`<wnid>/<any>` or `<wnid>_<any>`), else -1. Every file passes `guard`
first: one `os.stat` here, its header in tf.data before any decode.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from compression_helps.core import imagenet
from compression_helps.sources import guard

__all__ = [
    "IMAGE_EXTENSIONS",
    "SAMPLE_IMAGES_URL",
    "folder_examples",
    "open_folder",
    "sample_images_dir",
]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".gif", ".bmp", ".webp")
# One image per ImageNet class, about 100 MB (used by `make demo`).
SAMPLE_IMAGES_URL = (
    "https://github.com/EliSchwartz/imagenet-sample-images/archive/"
    "refs/heads/master.zip"
)
_WNID = re.compile(r"n\d{8}")


def _label_of(relpath: str) -> int:
    """Class of `<wnid>/<any>` or `<wnid>_<any>`; -1 if it names none."""
    parts = relpath.split(os.sep)
    candidates = [parts[-2]] if len(parts) > 1 else []
    candidates.append(parts[-1].split("_", 1)[0])
    for name in candidates:
        if _WNID.fullmatch(name) and name in imagenet.wnid_index():
            return imagenet.wnid_index()[name]
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


def open_folder(
    folder: str, limit: int | None, limits: guard.Limits
) -> dict[str, Any]:
    """The fields of a `datasets.Source` reading an image folder.

    Args:
      folder: see `folder_examples`.
      limit: only the first `limit` files (in sorted path order).
      limits: what a file may be (`guard`); others are never opened.

    Returns:
      Every field of `datasets.Source`: ids are paths relative to
      `folder`, labels from the paths (-1: none), the fingerprint a
      digest of the files' names, sizes and modification times.

    Raises:
      FileNotFoundError: not a folder, or no image files in it.
    """
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

    return {
        "read": read,
        "num_examples": len(paths),
        "description": f"folder {folder}",
        "root": folder,
        "known_labels": labels,
        "read_indices": read_indices,
        "fingerprint": fingerprint,
        "known_ids": ids,
    }


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
