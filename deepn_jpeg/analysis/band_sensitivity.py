"""A model's sensitivity to each DCT band, and the JPEG tables it gives.

Ahmed H. Salamah, Kaixiang Zheng, Linfeng Ye, En-Hui Yang. "JPEG Compliant
Compression for DNN Vision." ICIP 2023; extended in IEEE JSAIT 2024 (OptS).
OptS weighs each DCT band's quantization error by how much the model's loss
reacts to it. Ours (SPEC.md, "Sensitivity tables (ours, after OptS)"):

1. each decoded image (`candidates.decode_image`) becomes JPEG's
   coefficients (`dct_pixels.rgb_to_coefficients`);
2. a JPEG decoder without rounding or clipping
   (`dct_pixels.coefficients_to_rgb`), the model's own crop, resize and
   normalisation, and the model (`evaluate.model_probabilities`) map them
   to probabilities, and a per-image loss is differentiated back to every
   coefficient;
3. s_k, the mean over all 8x8 blocks of all images of the squared gradient
   of band k, per component (`BandSensitivity`). "kl": the diagonal of the
   Fisher information of the model's own prediction (the second-order term
   of KL(p_clean || p)), by random-sign probes; "xent": cross-entropy with
   the true labels;
4. step_k proportional to s_k^(-1/2), the high-rate rate-distortion optimum
   (`steps`, `qtables`).

Not reproduced: OptS's own rate model, optimiser, data and models; its
tables are not compared with ours. The decoder's rounding to integers is
left out of the gradient path (its derivative is zero almost everywhere);
the model's own clip to [0, 255] after resizing is kept. `sensitivity` is
the job that measures a data set and writes the tables.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from compression_helps.core import checks, files
from compression_helps.engine import candidates, evaluate
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.analysis import dct_pixels, statistics
from deepn_jpeg.jpeg import tables

__all__ = [
    "LOSSES",
    "BandSensitivity",
    "check_settings",
    "compute_with_indices",
    "qtables",
    "steps",
]

LOSSES = ("kl", "xent")
_ARRAYS = ("num_images", "counts", "sums_sq", "chroma_subsampling", "loss")
# A band is at most this much coarser than the finest one (the table range):
# sensitivities below largest / 255**2 are raised to it.
_MAX_STEP_RATIO = 255.0
# sqrt(p) has an infinite slope at 0; float32 softmax outputs underflow.
_MIN_PROBABILITY = 1e-30


@dataclasses.dataclass(frozen=True, eq=False)
class BandSensitivity:
    """Running sums of squared loss gradients per DCT band and component.

    Attributes:
      num_images: images measured.
      counts: `[3]` int64, 8x8 blocks per component (Y, Cb, Cr).
      sums_sq: `[3, 8, 8]` float64, per band the sum over blocks of the
        squared gradient of the loss with respect to its coefficient.
      chroma_subsampling: the coefficients' chroma grid, "4:2:0" or "4:4:4".
      loss: "kl" or "xent" (see `compute_with_indices`).
    """

    num_images: int
    counts: np.ndarray
    sums_sq: np.ndarray
    chroma_subsampling: str = "4:2:0"
    loss: str = "kl"

    def __post_init__(self):
        """Normalises dtypes and checks shapes and names."""
        object.__setattr__(self, "counts", np.asarray(self.counts, np.int64))
        object.__setattr__(self, "sums_sq", np.asarray(self.sums_sq, float))
        if self.counts.shape != (3,) or self.sums_sq.shape != (3, 8, 8):
            raise ValueError(
                f"expected counts [3] and sums_sq [3, 8, 8], got "
                f"{self.counts.shape} and {self.sums_sq.shape}"
            )
        checks.one_of(
            "chroma_subsampling",
            self.chroma_subsampling,
            statistics.CHROMA_SUBSAMPLINGS,
        )
        checks.one_of("loss", self.loss, LOSSES)

    @classmethod
    def empty(
        cls, chroma_subsampling: str = "4:2:0", loss: str = "kl"
    ) -> BandSensitivity:
        """Sums of no images (the identity of `merge`)."""
        zeros = np.zeros((3, 8, 8))
        return cls(0, np.zeros(3), zeros, chroma_subsampling, loss)

    def merge(self, other: BandSensitivity) -> BandSensitivity:
        """Sums over both image sets (same subsampling and loss).

        Raises:
          ValueError: the subsamplings or losses differ.
        """
        mine = (self.chroma_subsampling, self.loss)
        theirs = (other.chroma_subsampling, other.loss)
        if mine != theirs:
            raise ValueError(f"cannot merge sensitivities {mine} and {theirs}")
        return BandSensitivity(
            self.num_images + other.num_images,
            self.counts + other.counts,
            self.sums_sq + other.sums_sq,
            *mine,
        )

    def mean(self, component: str = "luma") -> np.ndarray:
        """s_k: the mean squared gradient per block of each band.

        Args:
          component: "luma" (= "y"), "cb", "cr", or "chroma" (Cb and Cr
            pooled: as both have as many blocks, the mean of the two).

        Returns:
          `[8, 8]` float64, natural order.

        Raises:
          ValueError: unknown component, or no blocks.
        """
        pooled = statistics.planes(component)
        count = int(self.counts[pooled].sum())
        if not count:
            raise ValueError(f"no {component} blocks were measured")
        return self.sums_sq[pooled].sum(axis=0) / count

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The sums as arrays, for `files.write_npz` (also shard files)."""
        return {
            "num_images": np.array(self.num_images, np.int64),
            "counts": self.counts,
            "sums_sq": self.sums_sq,
            "chroma_subsampling": np.array(self.chroma_subsampling),
            "loss": np.array(self.loss),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> BandSensitivity:
        """Inverse of `to_arrays`; other arrays are ignored.

        Raises:
          ValueError: an array is missing or has the wrong shape.
        """
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"not band sensitivities: no {', '.join(missing)}")
        return cls(
            int(arrays["num_images"]),
            arrays["counts"],
            arrays["sums_sq"],
            str(arrays["chroma_subsampling"]),
            str(arrays["loss"]),
        )

    def save(self, path: str) -> None:
        """Writes `to_arrays()` as an `.npz`, atomically."""
        files.write_npz(path, self.to_arrays())

    @classmethod
    def load(cls, path: str) -> BandSensitivity:
        """Reads a file written by `save` (one-line errors)."""
        try:
            return cls.from_arrays(files.read_npz(path))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def steps(
    sens: BandSensitivity, reference: np.ndarray = tables.STANDARD_LUMA_QTABLE
) -> tuple[np.ndarray, np.ndarray]:
    """Real-valued steps, before rounding: step_k = c * s_k^(-1/2).

    The high-rate optimum of sum_k s_k * step_k^2 / 12 at a given rate
    (SPEC.md, "Sensitivity tables"): luma from the Y sensitivities, chroma from
    the mean of Cb and Cr, one constant c for both; c makes the geometric mean
    of the luma steps that of `reference` (Annex K's luma table: "quality 50").
    Sensitivities below 1/255^2 of the largest are raised to it first.

    Args:
      sens: the sensitivities.
      reference: `[8, 8]` table whose geometric mean the luma steps get.

    Returns:
      `(luma, chroma)` `[8, 8]` float64.

    Raises:
      ValueError: no blocks, or no positive finite sensitivity.
    """
    both = np.stack([sens.mean("luma"), sens.mean("chroma")])
    largest = both.max()
    if not np.all(np.isfinite(both)) or not largest > 0:
        raise ValueError("no band has a positive finite sensitivity")
    raw = np.maximum(both, largest / _MAX_STEP_RATIO**2) ** -0.5
    log_c = np.mean(np.log(np.asarray(reference, float))) - np.mean(
        np.log(raw[0])
    )
    luma, chroma = raw * np.exp(log_c)
    return luma, chroma


def qtables(
    sens: BandSensitivity, reference: np.ndarray = tables.STANDARD_LUMA_QTABLE
) -> tuple[np.ndarray, np.ndarray]:
    """`steps` rounded (halves up) and clipped to baseline JPEG's [1, 255].

    Returns:
      `(luma, chroma)` `[8, 8]` int32; scale them with
      `tables.scale_qtable` (quality 50 keeps them).
    """
    return tuple(
        np.clip(np.floor(s + 0.5), 1, 255).astype(np.int32)
        for s in steps(sens, reference)
    )


def _objectives(
    probabilities: tf.Tensor,
    labels: np.ndarray,
    indices: np.ndarray,
    loss: str,
    probes: int,
    seed: int,
) -> tf.Tensor:
    """`[probes]` summed losses whose squared gradients estimate s_k."""
    if loss == "xent":
        true = tf.gather(probabilities, labels, batch_dims=1)  # [b]
        nll = -tf.math.log(tf.maximum(true, _MIN_PROBABILITY))
        return tf.reduce_sum(nll)[None]
    # d(2 sqrt(p_c)) = sqrt(p_c) d(log p_c): with independent random signs,
    # E[(sum_c sign_c sqrt(p_c) d log p_c)^2] = sum_c p_c (d log p_c)^2, the
    # Fisher information's diagonal, for one backward pass per probe. Seeded
    # per image: the same whatever the batch or shard.
    classes = probabilities.shape[-1]
    signs = np.stack(
        [
            np.random.default_rng([seed, index + 1]).choice(
                [-1.0, 1.0], (probes, classes)
            )
            for index in indices
        ]
    )  # [b, probes, C]
    roots = tf.sqrt(tf.maximum(probabilities, _MIN_PROBABILITY))
    return 2.0 * tf.einsum("bc,brc->r", roots, tf.constant(signs, tf.float32))


def _batch_sums(
    examples: list[dict[str, tf.Tensor]],
    probabilities_fn: Callable[[tf.Tensor], tf.Tensor],
    resize: Callable[[tf.Tensor], tf.Tensor],
    loss: str,
    chroma_subsampling: str,
    upsampling: str,
    probes: int,
    seed: int,
) -> BandSensitivity:
    """Squared gradients of a batch of images (one model call)."""
    coefficients = [list(e["coefficients"]) for e in examples]
    labels = np.array([int(e["label"]) for e in examples])
    indices = np.array([int(e["index"]) for e in examples])
    probes = probes if loss == "kl" else 1
    with tf.GradientTape(persistent=probes > 1) as tape:
        tape.watch(coefficients)
        pixels = [
            # The model's own crop and resize of the decoded image.
            resize(
                dct_pixels.coefficients_to_rgb(
                    *(c[None] for c in planes),
                    chroma_subsampling,
                    upsampling,
                    e["size"],
                )[0]
            )
            for planes, e in zip(coefficients, examples, strict=True)
        ]
        probabilities = probabilities_fn(tf.stack(pixels))  # [b, C]
        objectives = _objectives(
            probabilities, labels, indices, loss, probes, seed
        )
    sums_sq = np.zeros((3, 8, 8))
    for probe in range(probes):
        gradients = tape.gradient(
            objectives,
            coefficients,
            output_gradients=tf.one_hot(probe, probes),
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        for planes in gradients:  # Y, Cb, Cr of one image.
            for c, gradient in enumerate(planes):
                squares = tf.square(tf.cast(gradient, tf.float64))
                sums_sq[c] += tf.reduce_sum(squares, [0, 1]).numpy()
    counts = np.sum(
        [[p.shape[0] * p.shape[1] for p in planes] for planes in coefficients],
        axis=0,
    )  # Blocks of Y, Cb, Cr.
    return BandSensitivity(
        len(examples), counts, sums_sq / probes, chroma_subsampling, loss
    )


def check_settings(
    loss: str,
    chroma_subsampling: str,
    upsampling: str,
    probes: int,
    seed: int,
    batch_size: int,
) -> None:
    """Refuses settings of `compute_with_indices` (its arguments' names).

    Raises:
      ValueError: one line naming the bad setting.
    """
    checks.one_of("loss", loss, LOSSES)
    checks.one_of(
        "chroma_subsampling", chroma_subsampling, statistics.CHROMA_SUBSAMPLINGS
    )
    checks.one_of("upsampling", upsampling, dct_pixels.UPSAMPLINGS)
    checks.integer("probes", probes, 1)
    checks.integer("seed", seed, 0)
    checks.integer("batch_size", batch_size, 1)


def compute_with_indices(
    classifier: registry.Classifier,
    dataset: tf.data.Dataset,
    loss: str = "kl",
    chroma_subsampling: str = "4:2:0",
    upsampling: str = "fancy",
    probes: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    ignore_errors: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[BandSensitivity, np.ndarray]:
    """Sensitivities of a data set's images to each band (steps 1-3).

    Each image is decoded (`candidates.decode_image`), transformed
    (`dct_pixels.rgb_to_coefficients`) and decoded back
    (`dct_pixels.coefficients_to_rgb`, no clip) at full resolution; the
    classifier's `resize` (crop, resize, clip to [0, 255]) and
    `evaluate.model_probabilities` follow, as in `evaluate.classify_fn` but
    without rounding the resized pixels. "kl":
    the loss 2 sum_c sign_c sqrt(p_c), random signs per image; the mean of
    its squared gradient is the Fisher information's diagonal, the
    curvature of KL(p_clean || p) (SPEC.md). "xent": -log p_label;
    unlabelled examples are left out.

    Args:
      classifier: the model and its preprocessing.
      dataset: example dicts (`datasets`): "image_bytes", "label", "index".
      loss: "kl" or "xent".
      chroma_subsampling: the coefficients' chroma grid.
      upsampling: the decoder's 4:2:0 chroma upsampling.
      probes: random-sign probes per image ("kl"), one backward pass each.
      seed: seed of the signs, with each example's "index".
      batch_size: images per model call.
      ignore_errors: skip images that fail to decode.
      progress: called with the number of images as each batch finishes.

    Returns:
      The sums, and `[K]` int64 the "index" of each measured example.
    """
    check_settings(
        loss, chroma_subsampling, upsampling, probes, seed, batch_size
    )

    def per_image(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        image = candidates.decode_image(example["image_bytes"])
        planes = dct_pixels.rgb_to_coefficients(image, chroma_subsampling)
        return {
            "coefficients": tuple(tf.cast(p, tf.float32) for p in planes),
            "size": tf.shape(image)[:2],
            "index": tf.cast(example.get("index", -1), tf.int64),
            "label": tf.cast(example["label"], tf.int32),
        }

    usable = functools.partial(datasets.usable, require_label=loss == "xent")
    examples = dataset.filter(usable).map(per_image, tf.data.AUTOTUNE)
    if ignore_errors:
        examples = examples.ignore_errors()
    measure = functools.partial(
        _batch_sums,
        # Padded batches: an image's result does not depend on which images
        # share its batch (or shard).
        probabilities_fn=tf.function(
            functools.partial(
                evaluate.model_probabilities, classifier, batch_size=batch_size
            ),
            reduce_retracing=True,
        ),
        resize=classifier.resize,
        loss=loss,
        chroma_subsampling=chroma_subsampling,
        upsampling=upsampling,
        probes=probes,
        seed=seed,
    )
    total = BandSensitivity.empty(chroma_subsampling, loss)
    indices = []
    for batch in _chunks(examples.prefetch(tf.data.AUTOTUNE), batch_size):
        total = total.merge(measure(batch))
        indices.extend(int(e["index"]) for e in batch)
        if progress is not None:
            progress(len(batch))
    return total, np.array(indices, np.int64)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` consecutive items (the last may be shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
