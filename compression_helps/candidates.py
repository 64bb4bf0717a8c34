"""The 11 candidates of an image: the original file and its JPEG versions.

SPEC.md ("Candidates and sizes"): candidate 0 is the original file byte for
byte; candidates 1..V-1 re-encode the decoded original at full resolution
with `tf.io.encode_jpeg(quality=q, optimize_size=True)` (libjpeg, 4:2:0
chroma, see BUILD.md). The size of a candidate is its whole file in bytes.
The model's own crop/resize/normalisation comes after decoding each one.

`tf.io.encode_jpeg` has only a CPU kernel: `candidate_batches` runs the
per-image work on host threads (`map` with `num_parallel_calls`) and overlaps
it with the model through `prefetch`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import tensorflow as tf

from compression_helps import datasets

__all__ = [
    "JPEG",
    "ORIGINAL",
    "QUALITIES",
    "Codec",
    "as_codecs",
    "jpeg_codec",
    "candidate_batches",
    "decode_image",
    "encoded_candidates",
    "make_candidates",
    "model_pixels",
    "validate_qualities",
]

# SPEC.md: QF 100, 90, ..., 10.
QUALITIES = (100, 90, 80, 70, 60, 50, 40, 30, 20, 10)
JPEG = "jpeg"  # The curve of standard JPEG.
ORIGINAL = "original"  # The curve (and name) of candidate 0.


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
        tf.io.encode_jpeg, quality=quality, optimize_size=True
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


def model_pixels(
    image_uint8: tf.Tensor, resize: Callable[[tf.Tensor], tf.Tensor]
) -> tf.Tensor:
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


def encoded_candidates(
    original_uint8: tf.Tensor,
    resize: Callable[[tf.Tensor], tf.Tensor],
    codecs: Sequence[Codec],
) -> dict[str, tf.Tensor]:
    """Per-image work of every codec: its file's size and decoded pixels.

    Both the streaming evaluation (`make_candidates`) and the in-memory one
    (`in_memory.InMemoryImages`, originals decoded once) run this, so a
    codec's numbers are the same in both.

    Args:
      original_uint8: `[H, W, 3]` uint8, the decoded original.
      resize: the model's crop and resize (`models.Classifier.resize`).
      codecs: the candidates to write.

    Returns:
      `{"sizes": [K] int64 bytes, "pixels": [K, S, S, 3] uint8}`.
    """
    files = tf.stack([codec.encode(original_uint8) for codec in codecs])
    pixels = [
        model_pixels(decode_image(files[i]), resize) for i in range(len(codecs))
    ]
    return {
        "sizes": tf.cast(tf.strings.length(files), tf.int64),
        "pixels": tf.stack(pixels),
    }


def make_candidates(
    example: dict[str, tf.Tensor],
    resize: Callable[[tf.Tensor], tf.Tensor],
    qualities: Sequence[int | Codec] = QUALITIES,
) -> dict[str, tf.Tensor]:
    """Per-example work: candidates, their sizes and model-sized pixels.

    Args:
      example: `{"id", "image_bytes", "label"}` and optionally `"index"`
        and `"error"` (see `datasets`; dropped, as the image bytes are).
      resize: `[H, W, 3]` uint8 -> `[S, S, 3]` float32 in [0, 255], the
        model's crop and resize (`models.Classifier.resize`).
      qualities: candidates 1..V-1: JPEG QFs or `Codec`s.

    Returns:
      `{"id", "label", ["index",] "sizes": [V] int64 bytes, "num_pixels":
      int64 H * W of the original, "pixels": [V, S, S, 3] uint8}`
      (`model_pixels`); candidate 0 is the original file.
    """
    original = decode_image(example["image_bytes"])
    encoded = encoded_candidates(original, resize, as_codecs(qualities))
    original_size = tf.cast(tf.strings.length(example["image_bytes"]), tf.int64)
    # "error" is "" here: refused examples never reach the decoder.
    kept = {
        k: v for k, v in example.items() if k not in ("image_bytes", "error")
    }
    shape = tf.shape(original, out_type=tf.int64)
    return {
        **kept,
        "sizes": tf.concat([original_size[None], encoded["sizes"]], 0),
        "num_pixels": shape[0] * shape[1],  # Of the original, for bpp.
        "pixels": tf.concat(
            [model_pixels(original, resize)[None], encoded["pixels"]], 0
        ),
    }


def candidate_batches(
    dataset: tf.data.Dataset,
    resize: Callable[[tf.Tensor], tf.Tensor],
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
      resize: the model's crop and resize, see `make_candidates`.
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
