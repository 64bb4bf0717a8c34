"""A candidate store: the encoding stage of a data set, written once.

The JPEG encodes are a large part of the host's work in an evaluation
(`candidates`; `make bench` measures how large). A store keeps their result
for every image of a data set, so that later runs (a new model, a rerun)
read the files and only decode them (`candidates.stored_candidate_batches`).

Format: one `tf.train.Example` per image, with "index" (int64, its place in
the source), "id" (bytes), "label" (int64), "num_pixels" (int64, of the
original) and "files" (V bytes: file 0 the original byte for byte, then one
JPEG file per QF). A candidate's size is its file's length, not kept twice.
The records are in TFRecord shards of `SHARD_SIZE` images by source index,
`candidates-<start>-<stop>.tfrecord`, next to `store.json`, which holds the
key. Each shard is written to a temporary file and renamed into place
(`files.atomic_path`), so a shard that exists is whole: an interrupted fill
leaves only whole shards, and the next fill writes the missing ones. Two
processes filling the same store write the same bytes, so neither can
spoil the other's shard.

The key is what the files depend on (and this version's record format and
shard size): the candidates (QFs), the encoder's settings
(`candidates.JPEG_ENCODE_OPTIONS`: subsampling, Huffman tables), the
TensorFlow version (its bundled libjpeg-turbo writes the files; TF does not
report that library's version separately), the data settings
(`datasets.DataConfig`: which images, split and sample) and the data's
fingerprint (`datasets.Source.fingerprint`). A store made under another key
is refused in one line that names what differs; it is never reused.
Images the source's guard refuses, or that cannot be decoded, are left out;
the evaluation finds them missing and says why (`datasets.diagnose`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence

import tensorflow as tf

from compression_helps.core import files, progress, rundir
from compression_helps.engine import candidates
from compression_helps.sources import datasets

__all__ = ["KEY_FILE", "SHARD_SIZE", "Store", "store_key"]

KEY_FILE = "store.json"
# Images per shard: about 100 MB of ImageNet-sized candidate files.
SHARD_SIZE = 256
_FORMAT = 1  # Of the records; a store of another format is refused.


def store_key(
    codecs: Sequence[candidates.Codec],
    data: datasets.DataConfig,
    source: datasets.Source,
) -> dict:
    """What a store's files depend on (see the module docstring).

    Args:
      codecs: candidates 1..V-1, standard JPEG only.
      data: the resolved data settings.
      source: the data they select.

    Returns:
      The key, JSON-serialisable.

    Raises:
      ValueError: a codec other than standard JPEG (its tables are not
        part of any key).
    """
    custom = [c.name for c in codecs if c.curve != candidates.JPEG]
    if custom:
        raise ValueError(
            "a candidate store holds standard JPEG candidates only, not "
            f"{', '.join(custom)}"
        )
    return {
        "format": _FORMAT,
        "shard_size": SHARD_SIZE,
        "candidates": [candidates.ORIGINAL] + [c.name for c in codecs],
        "encoder": {
            "function": "tf.io.encode_jpeg",
            **candidates.JPEG_ENCODE_OPTIONS,
        },
        "tensorflow": tf.__version__,
        "data": json.loads(json.dumps(dataclasses.asdict(data))),
        "fingerprint": source.fingerprint,
    }


def _feature_spec(num_candidates: int) -> dict:
    return {
        "index": tf.io.FixedLenFeature([], tf.int64),
        "id": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "num_pixels": tf.io.FixedLenFeature([], tf.int64),
        "files": tf.io.FixedLenFeature([num_candidates], tf.string),
    }


def _serialize(record: dict) -> bytes:
    """One `candidates.candidate_files` record (NumPy) as a tf.train.Example."""

    def ints(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=value))

    def strings(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=value))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "index": ints([record["index"]]),
                "id": strings([record["id"]]),
                "label": ints([record["label"]]),
                "num_pixels": ints([record["num_pixels"]]),
                "files": strings(list(record["files"])),
            }
        )
    )
    return example.SerializeToString()


@dataclasses.dataclass(frozen=True)
class Store:
    """An opened candidate store; made by `Store.open`.

    Attributes:
      root: its folder.
      key: what its files depend on (`store_key`).
      num_examples: the images of its source (stored or left out).
    """

    root: str
    key: dict
    num_examples: int

    @classmethod
    def open(cls, root: str, key: dict, num_examples: int) -> Store:
        """Opens the store in `root`, or starts one there.

        Args:
          root: the store's folder; created if absent.
          key: `store_key` of the run.
          num_examples: the images of the run's source.

        Returns:
          The store (maybe still empty: `fill` writes it).

        Raises:
          ValueError: `root` holds other files, or a store made under
            another key (one line naming what differs).
          PermissionError: `root` cannot be created.
        """
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise PermissionError(
                f"{root}: cannot create the candidate store ({e.strerror})"
            ) from None
        path = os.path.join(root, KEY_FILE)
        record = {"key": key, "num_examples": num_examples}
        if not os.path.exists(path):
            # Temporary folders of interrupted writes are the store's own.
            foreign = [n for n in os.listdir(root) if not n.startswith(".tmp-")]
            if foreign:
                raise ValueError(
                    f"{root}: folder holds files that are not a candidate "
                    "store; use a new or empty --candidates folder"
                )
            files.write_json(path, record)
            return cls(root, key, num_examples)
        stored = files.read_json(path)
        if not isinstance(stored, dict) or not isinstance(
            stored.get("key"), dict
        ):
            raise ValueError(f"{path}: not a candidate store's key file")
        changed = rundir.changed_settings(stored["key"], key)
        if changed:
            raise ValueError(
                f"{root}: candidate store made with other "
                f"{', '.join(changed)}; use another --candidates folder "
                "(a store is never reused under another key)"
            )
        return cls(root, key, num_examples)

    @property
    def names(self) -> list[str]:
        """The candidates' names, the original first."""
        return list(self.key["candidates"])

    def check_candidates(self, codecs: Sequence[candidates.Codec]) -> None:
        """Refuses codecs other than the store's.

        Args:
          codecs: candidates 1..V-1 of the evaluation.

        Raises:
          ValueError: other candidates than the stored ones.
        """
        wanted = [candidates.ORIGINAL] + [c.name for c in codecs]
        if wanted != self.names:
            raise ValueError(
                f"{self.root}: candidate store of {self.names[1:]}, not "
                f"{wanted[1:]}"
            )

    def _ranges(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, int]]:
        """The shards' image ranges that overlap `[start, stop)`."""
        stop = self.num_examples if stop is None else stop
        first = start - start % SHARD_SIZE
        for begin in range(first, min(stop, self.num_examples), SHARD_SIZE):
            yield begin, min(begin + SHARD_SIZE, self.num_examples)

    def _path(self, start: int, stop: int) -> str:
        name = f"candidates-{start:09d}-{stop:09d}.tfrecord"
        return os.path.join(self.root, name)

    def missing(self) -> list[tuple[int, int]]:
        """The image ranges whose shard is not written yet."""
        return [r for r in self._ranges() if not os.path.exists(self._path(*r))]

    def fill(
        self,
        source: datasets.Source,
        codecs: Sequence[candidates.Codec],
        verbose: bool = True,
    ) -> int:
        """Encodes and writes every missing shard; the others are kept.

        Args:
          source: the data of the key (same fingerprint).
          codecs: the key's candidates.
          verbose: show the progress.

        Returns:
          The number of images read to encode (0: the store was full).
        """
        self.check_candidates(codecs)
        missing = self.missing()
        encode = functools.partial(
            candidates.candidate_files, qualities=tuple(codecs)
        )
        usable = functools.partial(datasets.usable, require_label=False)
        bar = progress.Progress(
            self.num_examples, "image", "candidate store", verbose=verbose
        )
        done = self.num_examples - sum(b - a for a, b in missing)
        bar.add(done, reused=True)
        with bar:
            for start, stop in missing:
                records = source.read(start, stop).filter(usable)
                # `map` keeps the order while it encodes images in parallel.
                records = records.map(
                    encode, num_parallel_calls=tf.data.AUTOTUNE
                ).ignore_errors()
                with bar.part(stop - start) as report:
                    self._write(start, stop, records, report)
        return sum(b - a for a, b in missing)

    def _write(
        self,
        start: int,
        stop: int,
        records: tf.data.Dataset,
        report: Callable[[int], None],
    ) -> None:
        with files.atomic_path(self._path(start, stop)) as tmp_path:
            with tf.io.TFRecordWriter(tmp_path) as writer:
                for record in records.as_numpy_iterator():
                    writer.write(_serialize(record))
                    report(1)
            with open(tmp_path, "rb") as f:  # On disk before it is named.
                os.fsync(f.fileno())

    def read(self, start: int = 0, stop: int | None = None) -> tf.data.Dataset:
        """The stored records of the images with index in `[start, stop)`.

        Args:
          start: first index.
          stop: end index; None: all.

        Returns:
          `candidates.candidate_files` records, in index order.

        Raises:
          ValueError: a shard is not written yet (`fill` first).
        """
        stop = self.num_examples if stop is None else stop
        ranges = list(self._ranges(start, stop))
        absent = [r for r in ranges if not os.path.exists(self._path(*r))]
        if absent:
            raise ValueError(
                f"{self.root}: candidate store not filled (images "
                f"{absent[0][0]}-{absent[0][1]} missing)"
            )
        spec = _feature_spec(len(self.names))

        def parse(serialized):
            record = tf.io.parse_single_example(serialized, spec)
            return {**record, "label": tf.cast(record["label"], tf.int32)}

        paths = [self._path(*r) for r in ranges]
        records = tf.data.TFRecordDataset(paths).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE
        )
        return records.filter(
            lambda r: (r["index"] >= start) & (r["index"] < stop)
        )
