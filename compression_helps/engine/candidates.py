"""The 11 candidates of an image: the original file and its JPEG versions.

SPEC.md ("Candidates and sizes"): candidate 0 is the original file byte for
byte; candidates 1..V-1 re-encode the decoded original at full resolution
with `tf.io.encode_jpeg(quality=q, optimize_size=True)` (libjpeg, 4:2:0
chroma, see BUILD.md). The size of a candidate is its whole file in bytes.
The model's own crop/resize/normalisation comes after decoding each one.

The work has two stages: encoding (decode the original, write the V-1
re-encoded files: `candidate_files`) and decoding (decode each of the V
files, then each model's crop and resize: `stored_candidates`).
`make_candidates` runs both, the original decoded once for the two. The
decoding stage takes one `resize` or a tuple of them, one per model: every
candidate is then decoded once and resized for each model, so several
models (of different input sizes) are evaluated on one JPEG stage. A
candidate store (`candidate_store`) keeps the encoding stage's files, so a
later run runs only the decoding stage.

`tf.io.encode_jpeg` has only a CPU kernel: `candidate_batches` runs the
per-image work on host threads (`map` with `num_parallel_calls`) and overlaps
it with the model through `prefetch`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import tensorflow as tf

from compression_helps.sources import datasets

__all__ = [
    "JPEG",
    "JPEG_ENCODE_OPTIONS",
    "ORIGINAL",
    "Resize",
    "QUALITIES",
    "Codec",
    "as_codecs",
    "jpeg_codec",
    "candidate_batches",
    "candidate_files",
    "candidate_pixels",
    "decode_image",
    "encode_candidates",
    "encoded_candidates",
    "make_candidates",
    "model_pixels",
    "stored_candidate_batches",
    "stored_candidates",
    "validate_qualities",
]

# SPEC.md: QF 100, 90, ..., 10.
QUALITIES = (100, 90, 80, 70, 60, 50, 40, 30, 20, 10)
# Standard JPEG's encoder settings besides the QF: 4:2:0 chroma (BUILD.md)
# and optimised Huffman tables. Candidate stores are keyed by them.
JPEG_ENCODE_OPTIONS = {"optimize_size": True, "chroma_downsampling": True}
JPEG = "jpeg"  # The curve of standard JPEG.
ORIGINAL = "original"  # The curve (and name) of candidate 0.
# A model's crop and resize: `[H, W, 3]` uint8 -> `[S, S, 3]` float32 in
# [0, 255] (`models.Classifier.resize`).
Resize = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class Codec:
    """One way to re-encode a decoded original into a candidate file.

    Attributes:
      curve: `JPEG` for standard JPEG (Annex K tables), else the name of the
        table set, e.g. "paper" or "fit-standard-qf40".
      quality: the IJG quality factor (1-100) the tables are scaled to.
      encode: `[H, W, 3]` uint8 -> scalar tf.string JPEG file; TF ops (or
        `tf.numpy_function`), usable inside `tf.data`.
    """

    curve: str
    quality: int
    encode: Callable[[tf.Tensor], tf.Tensor] = dataclasses.field(
        compare=False, repr=False
    )

    @property
    def name(self) -> str:
        """Candidate name in reports: `qf50`, or `<curve>_q50`."""
        if self.curve == JPEG:
            return f"qf{self.quality}"
        return f"{self.curve}_q{self.quality}"


def jpeg_codec(quality: int) -> Codec:
    """Standard JPEG at QF `quality` (SPEC.md, "Candidates and sizes")."""
    encode = functools.partial(
        tf.io.encode_jpeg, quality=quality, **JPEG_ENCODE_OPTIONS
    )
    return Codec(JPEG, quality, encode)


def as_codecs(qualities: Sequence[int | Codec]) -> tuple[Codec, ...]:
    """Candidates 1..V-1 as codecs: ints are standard JPEG QFs.

    Args:
      qualities: JPEG QFs and/or `Codec`s.

    Returns:
      The codecs.

    Raises:
      ValueError: empty, a QF out of [1, 100], or a repeated name.
    """
    codecs = tuple(
        q if isinstance(q, Codec) else jpeg_codec(q)
        for q in validate_qualities(qualities)
    )
    names = [c.name for c in codecs]
    if len(set(names)) != len(names):
        raise ValueError(f"repeated candidates in {names}")
    return codecs


def validate_qualities(
    qualities: Sequence[int | Codec],
) -> tuple[int | Codec, ...]:
    """Checks a QF list: distinct integers in [1, 100].

    Args:
      qualities: JPEG quality factors (and/or `Codec`s, passed through).

    Returns:
      The qualities as a tuple.

    Raises:
      ValueError: empty, out of range or repeated.
    """
    qualities = tuple(q if isinstance(q, Codec) else int(q) for q in qualities)
    if not qualities:
        raise ValueError("the list of JPEG qualities is empty")
    ints = [q for q in qualities if not isinstance(q, Codec)]
    bad = [q for q in ints if not 1 <= q <= 100]
    if bad:
        raise ValueError(f"JPEG qualities must be in [1, 100], got {bad}")
    if len(set(ints)) != len(ints):
        raise ValueError(f"repeated JPEG qualities in {ints}")
    return qualities


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decodes any supported image file to `[H, W, 3]` uint8.

    JPEG uses `dct_method="INTEGER_ACCURATE"` (the same IDCT as Pillow's
    libjpeg default); other formats (PNG, GIF, BMP, WebP) the first frame.

    Args:
      image_bytes: scalar tf.string, an encoded image file.

    Returns:
      `[H, W, 3]` uint8.
    """
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(
            image_bytes, channels=3, dct_method="INTEGER_ACCURATE"
        ),
        lambda: tf.io.decode_image(
            image_bytes, channels=3, expand_animations=False
        ),
    )
    return tf.ensure_shape(image, [None, None, 3])


def model_pixels(image_uint8: tf.Tensor, resize: Resize) -> tf.Tensor:
    """The one path from a decoded image to what crosses to the model.

    Args:
      image_uint8: `[H, W, 3]` uint8.
      resize: the model's crop and resize (`models.Classifier.resize`).

    Returns:
      `[S, S, 3]` uint8: rounded so that the host sends a quarter of the
      bytes to the accelerator, which applies the model's normalisation
      (`Classifier.preprocess_input`).
    """
    return tf.cast(tf.round(resize(image_uint8)), tf.uint8)


def candidate_pixels(
    images_uint8: Sequence[tf.Tensor], resize: Resize | Sequence[Resize]
) -> tf.Tensor | tuple[tf.Tensor, ...]:
    """Every model's pixels of decoded candidates, each decoded only once.

    Args:
      images_uint8: K decoded candidates, `[H, W, 3]` uint8 each.
      resize: the model's crop and resize (`models.Classifier.resize`), or
        a nest of them (a tuple: one per model, each with its own size).

    Returns:
      `[K, S, S, 3]` uint8 (`model_pixels`), in the structure of `resize`.
    """
    return tf.nest.map_structure(
        lambda one: tf.stack([model_pixels(i, one) for i in images_uint8]),
        resize,
    )


def encode_candidates(
    original_uint8: tf.Tensor, codecs: Sequence[Codec]
) -> tf.Tensor:
    """The JPEG work proper: every codec's file of one decoded original.

    Args:
      original_uint8: `[H, W, 3]` uint8, the decoded original.
      codecs: the candidates to write.

    Returns:
      `[K]` tf.string, the files.
    """
    return tf.stack([codec.encode(original_uint8) for codec in codecs])


def encoded_candidates(
    original_uint8: tf.Tensor,
    resize: Resize | Sequence[Resize],
    codecs: Sequence[Codec],
) -> dict[str, tf.Tensor]:
    """Per-image work of every codec: its file's size and decoded pixels.

    Both the streaming evaluation (`make_candidates`) and the in-memory one
    (`in_memory.InMemoryImages`, originals decoded once) run this, so a
    codec's numbers are the same in both.

    Args:
      original_uint8: `[H, W, 3]` uint8, the decoded original.
      resize: the model's crop and resize, or a nest of them (see
        `candidate_pixels`).
      codecs: the candidates to write.

    Returns:
      `{"sizes": [K] int64 bytes, "pixels": [K, S, S, 3] uint8}`, pixels in
      the structure of `resize`.
    """
    files = encode_candidates(original_uint8, codecs)
    decoded = [decode_image(files[i]) for i in range(len(codecs))]
    return {
        "sizes": tf.cast(tf.strings.length(files), tf.int64),
        "pixels": candidate_pixels(decoded, resize),
    }


def _encoding_stage(
    example: dict[str, tf.Tensor], codecs: Sequence[Codec]
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """The decoded original and `candidate_files`' record of one example."""
    image_bytes = tf.convert_to_tensor(example["image_bytes"], tf.string)
    original = decode_image(image_bytes)
    files = tf.concat(
        [image_bytes[None], encode_candidates(original, codecs)], 0
    )
    # "error" is "" here: refused examples never reach the decoder.
    kept = {
        k: v for k, v in example.items() if k not in ("image_bytes", "error")
    }
    shape = tf.shape(original, out_type=tf.int64)
    # num_pixels: of the original, for bits per pixel.
    return original, {**kept, "num_pixels": shape[0] * shape[1], "files": files}


def _decoding_stage(
    record: dict[str, tf.Tensor],
    resize: Resize | Sequence[Resize],
    original_uint8: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """`make_candidates`' output from a `candidate_files` record.

    `original_uint8`: candidate 0 already decoded (by the encoding stage);
    None: decoded here from its file.
    """
    files = record["files"]  # [V] tf.string, V known when traced.
    if original_uint8 is None:
        original_uint8 = decode_image(files[0])
    decoded = [original_uint8]
    decoded += [decode_image(files[i]) for i in range(1, files.shape[0])]
    return {
        **{k: v for k, v in record.items() if k != "files"},
        "sizes": tf.cast(tf.strings.length(files), tf.int64),
        "pixels": candidate_pixels(decoded, resize),
    }


def candidate_files(
    example: dict[str, tf.Tensor],
    qualities: Sequence[int | Codec] = QUALITIES,
) -> dict[str, tf.Tensor]:
    """The encoding stage alone: the candidate files of one example.

    What a candidate store keeps (`candidate_store`); `stored_candidates`
    turns it into `make_candidates`' output.

    Args:
      example: `{"id", "image_bytes", "label"}` and optionally `"index"`
        and `"error"` (see `datasets`; dropped, as the image bytes are).
      qualities: candidates 1..V-1: JPEG QFs or `Codec`s.

    Returns:
      `{"id", "label", ["index",] "num_pixels": int64 H * W of the
      original, "files": [V] tf.string}`; file 0 is the original, byte for
      byte.
    """
    return _encoding_stage(example, as_codecs(qualities))[1]


def stored_candidates(
    record: dict[str, tf.Tensor], resize: Resize | Sequence[Resize]
) -> dict[str, tf.Tensor]:
    """The decoding stage alone: `make_candidates`' output from its files.

    Args:
      record: a `candidate_files` record.
      resize: the model's crop and resize, or a nest of them (see
        `candidate_pixels`).

    Returns:
      As `make_candidates`; the same values, from the same files.
    """
    return _decoding_stage(record, resize)


def make_candidates(
    example: dict[str, tf.Tensor],
    resize: Resize | Sequence[Resize],
    qualities: Sequence[int | Codec] = QUALITIES,
) -> dict[str, tf.Tensor]:
    """Per-example work: candidates, their sizes and model-sized pixels.

    The encoding stage (`candidate_files`) then the decoding stage
    (`stored_candidates`), the original decoded once for both.

    Args:
      example: `{"id", "image_bytes", "label"}` and optionally `"index"`
        and `"error"` (see `datasets`; dropped, as the image bytes are).
      resize: `[H, W, 3]` uint8 -> `[S, S, 3]` float32 in [0, 255], the
        model's crop and resize (`models.Classifier.resize`); or a nest of
        them, one per model, each candidate then decoded once for all
        (`candidate_pixels`).
      qualities: candidates 1..V-1: JPEG QFs or `Codec`s.

    Returns:
      `{"id", "label", ["index",] "sizes": [V] int64 bytes, "num_pixels":
      int64 H * W of the original, "pixels": [V, S, S, 3] uint8}`
      (`model_pixels`; in the structure of `resize`); candidate 0 is the
      original file.
    """
    original, record = _encoding_stage(example, as_codecs(qualities))
    return _decoding_stage(record, resize, original)


def _batched(
    dataset: tf.data.Dataset,
    make: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]],
    batch_size: int,
    data_service: str | None,
    job_name: str | None,
) -> tf.data.Dataset:
    """The one candidate pipeline: `make` per example on host threads."""
    # Unlabelled examples are the caller's to drop (statistics keep them).
    dataset = dataset.filter(
        functools.partial(datasets.usable, require_label=False)
    )
    # `map` keeps the order (deterministic) while encoding images in parallel.
    dataset = dataset.map(make, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.ignore_errors()
    if data_service:
        dataset = dataset.apply(
            tf.data.experimental.service.distribute(
                processing_mode="distributed_epoch",
                service=data_service,
                job_name=job_name,
            )
        )
    dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)  # Overlaps JPEG work and model.


def candidate_batches(
    dataset: tf.data.Dataset,
    resize: Resize | Sequence[Resize],
    qualities: Sequence[int | Codec] = QUALITIES,
    batch_size: int = 8,
    data_service: str | None = None,
    job_name: str | None = None,
) -> tf.data.Dataset:
    """Batches of candidates, built on host threads ahead of the model.

    An example the source's guard refused (its `error`) is dropped before
    any decoding; a bad image (undecodable, ...) fails only its own
    element, which is dropped too. Callers find which by the examples'
    `index` (and why with `datasets.diagnose`).

    Args:
      dataset: example dicts (see `datasets`).
      resize: the model's crop and resize, or a nest of them (one per
        model), see `make_candidates`.
      qualities: candidates 1..V-1: JPEG QFs or `Codec`s.
      batch_size: images per batch (the model sees `batch_size * V`).
      data_service: address of a tf.data service dispatcher
        (`grpc://host:port`): the JPEG work then runs on its workers, and the
        batches arrive in any order (use `index` to restore it).
      job_name: tf.data service job name (one per dataset to process).

    Returns:
      Dicts of `make_candidates` outputs with a leading `[B]` axis; in the
      order of `dataset` unless `data_service` is given.
    """
    make = functools.partial(
        make_candidates, resize=resize, qualities=tuple(qualities)
    )
    return _batched(dataset, make, batch_size, data_service, job_name)


def stored_candidate_batches(
    records: tf.data.Dataset,
    resize: Resize | Sequence[Resize],
    batch_size: int = 8,
    data_service: str | None = None,
    job_name: str | None = None,
) -> tf.data.Dataset:
    """`candidate_batches` of stored candidate files: no JPEG encoding.

    Args:
      records: `candidate_files` records (`candidate_store.Store.read`).
      resize: the model's crop and resize, or a nest of them.
      batch_size: images per batch.
      data_service: tf.data service dispatcher, as for `candidate_batches`
        (its workers must see the store's folder).
      job_name: tf.data service job name.

    Returns:
      As `candidate_batches`.
    """
    make = functools.partial(stored_candidates, resize=resize)
    return _batched(records, make, batch_size, data_service, job_name)
