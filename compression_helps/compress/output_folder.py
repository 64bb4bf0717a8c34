"""Where `compress` puts the chosen files: an image folder or TFRecords.

The output folder (`--out`) mirrors the input: each image's chosen file goes
under its own relative path, with the extension `.jpg` (`jpeg_names`), or,
where the original itself is chosen and is not a JPEG file (a PNG, a WebP),
under its own name. With `format="tfrecord"` each shard of images is one
`images-<k>-of-<n>.tfrecord` file of `tf.train.Example`s instead.

The run's own files (settings, shards, manifest, reports) live in
`<out>/.compress/`, a run folder like every job's (`rundir.RunDir`). The
images are outside it, so they are tracked here: before a shard's files are
written their names are appended to `<out>/.compress/written.jsonl`, and
that log outlives a fresh run, which first removes every file in it. So a
rerun never leaves another run's files behind, a killed run's files are
known too, and nothing that this job did not write is ever removed or
overwritten: a user's file where an output would go stops the run.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from compression_helps.core import files, progress, rundir
from compression_helps.engine import candidates, ranking
from compression_helps.sources import datasets

__all__ = [
    "FORMATS",
    "LEDGER_FILE",
    "STATE_DIR",
    "OutputFolder",
    "check_places",
    "is_jpeg",
    "jpeg_names",
    "name_problem",
    "output_name",
    "tf_example",
    "tfrecord_name",
]

FORMATS = ("folder", "tfrecord")
STATE_DIR = ".compress"  # Hidden: apart from the images next to it.
LEDGER_FILE = "written.jsonl"


def check_places(out: str, data_folder: str | None) -> None:
    """Refuses an output folder inside the input folder, or around it.

    Args:
      out: the output folder (need not exist).
      data_folder: the input folder; None for a TFDS source.

    Raises:
      ValueError: one line naming both.
    """
    if data_folder is None:
        return
    out_real, data_real = os.path.realpath(out), os.path.realpath(data_folder)
    common = os.path.commonpath([out_real, data_real])
    if common == data_real:
        raise ValueError(
            f"--out {out} is inside the input folder {data_folder}; the "
            "input is never written to: choose a folder outside it"
        )
    if common == out_real:
        raise ValueError(
            f"the input folder {data_folder} is inside --out {out}; choose "
            "an --out outside the input"
        )


def jpeg_names(ids: Sequence[str]) -> dict[str, str]:
    """Each image's output name when its file is a JPEG.

    The id (relative path) with `.jpg` for its extension. Two ids that
    would get the same name (`a.png` and `a.jpg`) keep their whole name and
    add `.jpg` (`a.png.jpg`), except one that already is that name.

    Args:
      ids: image ids, relative paths.

    Returns:
      Id -> output name.
    """
    plain = {i: os.path.splitext(i)[0] + ".jpg" for i in ids}
    counts = collections.Counter(plain.values())
    return {
        i: name if counts[name] == 1 or i == name else i + ".jpg"
        for i, name in plain.items()
    }


def output_name(image_id: str, jpeg_name: str, data: bytes) -> str:
    """Where an image's chosen file goes.

    Args:
      image_id: the image's id (relative path).
      jpeg_name: its name for a JPEG file (`jpeg_names`).
      data: the chosen file.

    Returns:
      `jpeg_name` for a JPEG file; else (an original PNG, WebP, ... kept as
      it is) the id: the file's own name and extension.
    """
    return jpeg_name if is_jpeg(data) else image_id


def name_problem(name: str) -> str:
    """Why an output name cannot be written under `--out`; "" if it can."""
    parts = os.path.normpath(name).split(os.sep)
    if os.path.isabs(name) or ".." in parts or not name:
        return f"failed: output name {name!r} is not inside --out"
    if parts[0] == STATE_DIR:
        return f"failed: output name {name!r} is in the run's own folder"
    return ""


def is_jpeg(data: bytes) -> bool:
    """Whether a file's bytes are a JPEG file (its SOI marker)."""
    return data[:2] == b"\xff\xd8"


def tfrecord_name(shard: int, num_shards: int) -> str:
    """The TFRecord file of one shard of images."""
    return f"images-{shard:05d}-of-{num_shards:05d}.tfrecord"


def tf_example(image_bytes: bytes, name: str, image_id: str, label: int):
    """One image as a `tf.train.Example`, serialized deterministically.

    Args:
      image_bytes: the chosen file.
      name: its output name (`image/filename`).
      image_id: the source's id of the image (`image/source_id`).
      label: the source's class index; -1 (none) is left out.

    Returns:
      The serialized example (same bytes for the same inputs).
    """
    image_format = (
        "jpeg"
        if is_jpeg(image_bytes)
        else os.path.splitext(name)[1].lstrip(".").lower()
    )

    def as_bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {
        "image/encoded": as_bytes(image_bytes),
        "image/format": as_bytes(image_format.encode()),
        "image/filename": as_bytes(name.encode()),
        "image/source_id": as_bytes(image_id.encode()),
    }
    if label >= 0:
        features["image/class/label"] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[label])
        )
    example = tf.train.Example(features=tf.train.Features(feature=features))
    # Map fields in key order: a rerun writes byte-identical files.
    return example.SerializeToString(deterministic=True)


class OutputFolder:
    """The output folder, and the log of the files this job wrote there.

    Attributes:
      root: the output folder.
      format: "folder" or "tfrecord" (`FORMATS`).
      known: relative names of files written (or about to be) by runs of
        this job here, and not removed since.
    """

    def __init__(self, root: str, output_format: str = "folder"):
        """Reads the log of written files (call it inside the run's lock).

        Args:
          root: the output folder.
          output_format: one of `FORMATS`.
        """
        self.root = root
        self.format = output_format
        self._ledger = os.path.join(root, STATE_DIR, LEDGER_FILE)
        self.known = set(_read_ledger(self._ledger))

    @staticmethod
    def check(root: str) -> None:
        """Refuses a folder holding files that no run of this job made.

        A folder that a run made has its run folder `.compress/` with a
        `config.json`; whatever else it holds is left alone (`claim`).

        Args:
          root: the output folder.

        Raises:
          ValueError: a file in the way, or a foreign non-empty folder.
        """
        if not os.path.lexists(root):
            return
        if not os.path.isdir(root):
            raise ValueError(f"{root}: --out is not a folder")
        state = os.path.join(root, STATE_DIR)
        others = [n for n in os.listdir(root) if n != STATE_DIR]
        config = os.path.join(state, rundir.CONFIG_FILE)
        if others and not os.path.isfile(config):
            raise ValueError(
                f"{root}: folder holds files this project did not write; "
                "use a new or empty --out"
            )

    def remove_all(self) -> None:
        """Removes every file the log names (a fresh run), then the log."""
        for name in sorted(self.known):
            path = os.path.join(self.root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)
            _remove_empty_parents(self.root, os.path.dirname(path))
        if os.path.exists(self._ledger):
            os.remove(self._ledger)
        self.known = set()

    def claim(self, names: Sequence[str]) -> None:
        """Logs files as written by this job, before they are written.

        Args:
          names: relative output names.

        Raises:
          ValueError: one of them exists and is not this job's (a user's
            file is never overwritten).
        """
        for name in names:
            path = os.path.join(self.root, name)
            if name not in self.known and os.path.lexists(path):
                raise ValueError(
                    f"{path}: exists and was not written by this job; move "
                    "it away or use a new --out"
                )
        new = [n for n in names if n not in self.known]
        if not new:
            return
        os.makedirs(os.path.dirname(self._ledger), exist_ok=True)
        # One whole line per append; a line cut short is dropped on reading.
        files.append_jsonl(self._ledger, {"files": new})
        self.known.update(new)

    def write_file(self, name: str, data: bytes) -> None:
        """Writes `<root>/<name>` atomically (claim it first)."""
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        files.write_bytes(path, data)

    def write_tfrecord(self, name: str, records: Iterable[bytes]) -> None:
        """Writes `<root>/<name>` as a TFRecord file, atomically."""
        with files.atomic_path(os.path.join(self.root, name)) as tmp_path:
            with tf.io.TFRecordWriter(tmp_path) as writer:
                for record in records:
                    writer.write(record)

    def read_back(
        self, written: dict[str, np.ndarray], start: int, stop: int
    ) -> tf.data.Dataset:
        """The bytes of written images `[start, stop)`, read from disk.

        Args:
          written: `write_chosen`'s result.
          start: the first image (in the order of `written`).
          stop: one past the last.

        Returns:
          Scalar tf.string files, in order.
        """
        if self.format == "tfrecord":
            # Each shard's records are in order, the files in shard order.
            names = dict.fromkeys(written["tfrecords"].tolist())
            paths = [os.path.join(self.root, n) for n in names]
            spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}

            def encoded(record):
                return tf.io.parse_single_example(record, spec)["image/encoded"]

            records = tf.data.TFRecordDataset(paths).skip(start)
            return records.take(stop - start).map(encoded)
        names = written["names"][start:stop].tolist()
        paths = [os.path.join(self.root, n) for n in names]
        dataset = tf.data.Dataset.from_tensor_slices(
            tf.constant(paths, tf.string, shape=[len(paths)])
        )
        return dataset.map(tf.io.read_file)

    def write_chosen(
        self,
        run_dir: rundir.RunDir,
        source: datasets.Source,
        predictions: ranking.Predictions,
        chosen: np.ndarray,
        codecs: Sequence[candidates.Codec],
        shard_size: int,
        verbose: bool = True,
    ) -> dict[str, np.ndarray]:
        """Encodes each image's chosen candidate again and writes it.

        The candidate is made again the evaluation's way: the original
        decoded by `candidates.decode_image`, then its codec (the original
        itself for candidate 0). Shard by shard through
        `RunDir.map_shards`, so a killed run resumes.

        Args:
          run_dir: the run folder.
          source: the images `predictions` were made of.
          predictions: the candidates' sizes (and names).
          chosen: `[N]` chosen candidate per image of `predictions`.
          codecs: candidates 1..V-1.
          shard_size: images per shard.
          verbose: show a progress bar.

        Returns:
          `rows` `[M]` (of `predictions`), their output `names`, the
          `tfrecords` that hold them ("" in a folder) and the images
          `skipped` here (`rundir.SkippedImage.to_array`).

        Raises:
          RuntimeError: a file encoded again differs in size from the
            classified candidate (an encoder that is not deterministic).
        """
        ids = predictions.ids.tolist()
        if len(set(ids)) != len(ids):
            raise ValueError(f"{source.description}: image ids not unique")
        jpeg_names_of = jpeg_names(ids)
        row_of = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(ids, tf.string, shape=[len(ids)]),
                tf.range(len(ids), dtype=tf.int64),
            ),
            default_value=-1,
        )
        choices = tf.constant(chosen, tf.int32)
        num_examples = source.count()
        num_shards = math.ceil(num_examples / shard_size)

        def chosen_file(example):
            row = row_of.lookup(example["id"])
            original = example["image_bytes"]

            def encoder(codec):  # As `candidates.encoded_candidates`.
                return lambda: codec.encode(candidates.decode_image(original))

            branches = [lambda: original, *[encoder(c) for c in codecs]]
            data = tf.switch_case(choices[row], branches)
            return {"row": row, "label": example["label"], "data": data}

        def compute(start, stop, report):
            elements = (
                source.read(start, stop)
                .filter(lambda e: row_of.lookup(e["id"]) >= 0)
                .map(chosen_file, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE)
            )
            rows, names, datas, skipped = [], [], [], []
            for element in elements.as_numpy_iterator():
                row, data = int(element["row"]), element["data"]
                image_id, choice = ids[row], int(chosen[row])
                size = predictions.sizes[row, choice]
                if len(data) != size:
                    raise RuntimeError(
                        f"{image_id}: {predictions.names[choice]} encoded "
                        f"again is {len(data)} bytes, classified {size}: "
                        "the encoder is not deterministic"
                    )
                name = output_name(image_id, jpeg_names_of[image_id], data)
                problem = name_problem(name)
                if problem:
                    path = source.path_of(image_id)
                    skipped.append(rundir.SkippedImage(image_id, path, problem))
                    continue
                if self.format == "tfrecord":
                    label = int(element["label"])
                    data = tf_example(data, name, image_id, label)
                rows.append(row)
                names.append(name)
                datas.append(data)
            if self.format == "tfrecord":
                tfrecord = tfrecord_name(start // shard_size, num_shards)
                self.claim([tfrecord])
                self.write_tfrecord(tfrecord, datas)
            else:
                tfrecord = ""
                self.claim(names)
                for name, data in zip(names, datas, strict=True):
                    self.write_file(name, data)
                    report(1)
            return {
                "rows": np.array(rows, np.int64),
                "names": np.array(names, dtype=str),
                "tfrecords": np.array([tfrecord] * len(rows), dtype=str),
                "skipped": rundir.SkippedImage.to_array(skipped),
            }

        bar = progress.Progress(num_examples, "image", "writing", verbose)
        with bar:
            parts = list(
                run_dir.map_shards(
                    "written", num_examples, shard_size, compute, bar
                )
            )
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _read_ledger(path: str) -> list[str]:
    """The names in the log (a line cut short: its files were never written)."""
    names = []
    for record in files.read_jsonl(path):
        if isinstance(record, dict) and isinstance(record.get("files"), list):
            names.extend(record["files"])
    return names


def _remove_empty_parents(root: str, folder: str) -> None:
    root = os.path.abspath(root)
    folder = os.path.abspath(folder)
    while folder.startswith(root + os.sep) and os.path.isdir(folder):
        try:
            os.rmdir(folder)  # Only when empty.
        except OSError:
            return
        folder = os.path.dirname(folder)
