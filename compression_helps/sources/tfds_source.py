"""TFDS data sets as example sources (`datasets.load("tfds:<name>")`).

Reads any prepared TFDS image classification data set with ImageNet labels
through TFDS' own builder, the image bytes as stored (`SkipDecoding`), each
checked by `guard.tf_header_problem` before anything decodes it. A data set
that is not prepared is downloaded by TFDS; where that cannot happen
(offline, or a manual download such as ImageNet's), one line says what to
fetch and where to put it.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from compression_helps.core import files
from compression_helps.sources import guard

__all__ = ["open_split", "prepared_builder"]

# How much of a failed download's message to repeat.
_DETAIL_CHARS = 200


def _shortened(text: str) -> str:
    if len(text) <= _DETAIL_CHARS:
        return text
    return text[: _DETAIL_CHARS - 3] + "..."


def prepared_builder(name: str, data_dir: str | None = None) -> Any:
    """TFDS' builder of a data set, downloaded and prepared if need be.

    Args:
      name: the TFDS name, e.g. "imagenet_v2" or "imagenet2012".
      data_dir: TFDS data directory (None: TFDS' own default).

    Returns:
      The `tfds.core.DatasetBuilder`, prepared.

    Raises:
      ValueError: TFDS knows no such data set.
      FileNotFoundError: its files must be downloaded by hand and are not
        in TFDS' manual download folder (the message names the folder).
      OSError: it is not prepared and its download failed, e.g. offline
        (the message says how to prepare it elsewhere and where to copy it).
    """
    # Imported here: tensorflow_datasets takes seconds to import.
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"tfds: {files.first_line(e)}") from None
    if builder.is_prepared():
        return builder
    root = builder.data_dir_root
    try:
        builder.download_and_prepare()
    except AssertionError:  # TFDS' way to say the manual dir is empty.
        instructions = builder.MANUAL_DOWNLOAD_INSTRUCTIONS
        if not instructions:
            raise
        raise FileNotFoundError(
            f"tfds {name} needs files downloaded by hand: put them in "
            f"{root / 'downloads' / 'manual'} "
            f"({' '.join(instructions.split())})"
        ) from None
    except OSError as e:  # requests' errors are OSErrors too.
        relative = os.path.relpath(builder.data_dir, root)
        raise OSError(
            f"tfds {name} is not in {root} and cannot be downloaded here "
            f"({type(e).__name__}: {_shortened(files.first_line(e))}); on a "
            f"machine with network run `tfds build {name} --data_dir=DIR`, "
            f"then copy DIR/{relative} to {root}/{relative} (or pass "
            "--tfds_data_dir=DIR)"
        ) from None
    return builder


def open_split(
    spec: str,
    limit: int | None = None,
    data_dir: str | None = None,
    limits: guard.Limits = guard.DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The fields of a `datasets.Source` reading one split of a TFDS set.

    Args:
      spec: `<name>[:<split>]`; the split defaults to "validation" where
        there is one, else "test".
      limit: only the first `limit` examples.
      data_dir: TFDS data directory.
      limits: what an image may be (`guard`).

    Returns:
      `read`, `num_examples`, `description` and `fingerprint`, see
      `datasets.Source`. Examples are `datasets`' dicts; `id` is the
      "file_name" feature where there is one, else the index.

    Raises:
      ValueError, FileNotFoundError, OSError: see `prepared_builder`.
    """
    import tensorflow_datasets as tfds

    name, _, split = spec.partition(":")
    builder = prepared_builder(name, data_dir)
    split = split or (
        "validation" if "validation" in builder.info.splits else "test"
    )
    try:
        num_examples = builder.info.splits[split].num_examples
    except KeyError:  # Split metadata missing (e.g. under tfds mock_data).
        num_examples = None
    if limit is not None:
        num_examples = (
            limit if num_examples is None else min(limit, num_examples)
        )
    has_file_name = "file_name" in builder.info.features

    def to_example(index, features):
        image_bytes = features["image"]
        error = guard.tf_header_problem(image_bytes, limits, guard.FLAG_HINT)
        id_ = (
            features["file_name"]
            if has_file_name
            else tf.strings.as_string(index)
        )
        return {
            "index": index,
            # Ids end up in reports: never invalid UTF-8.
            "id": tf.strings.unicode_transcode(id_, "UTF-8", "UTF-8"),
            # Emptied when refused, so that nothing can decode a bomb.
            "image_bytes": tf.where(error == "", image_bytes, ""),
            "label": tf.cast(features["label"], tf.int32),
            "error": error,
        }

    def read(start: int, stop: int | None) -> tf.data.Dataset:
        stop = num_examples if stop is None else stop
        dataset = builder.as_dataset(
            split=f"{split}[{start}:{'' if stop is None else stop}]",
            shuffle_files=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        return dataset.enumerate(start).map(
            to_example, num_parallel_calls=tf.data.AUTOTUNE
        )

    described = split if limit is None else f"{split}[:{limit}]"
    return {
        "read": read,
        "num_examples": num_examples,
        "description": f"tfds {name}:{described}",
        "fingerprint": {
            "tfds": name,
            "split": split,
            "version": str(builder.info.version),
            "examples": num_examples,
        },
    }
