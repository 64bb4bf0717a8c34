"""The evaluation on a fixed set of images decoded once (a table search).

A table search writes the same images with hundreds of table pairs: the
originals are read and decoded once, not in every trial. The per-image work
(`candidates.encoded_candidates`) and the model step (`evaluate.classify_fn`,
`evaluate.classify_batches`) are those of `evaluate.predict`, so a codec's
sizes and ranks are the same in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from compression_helps.engine import candidates, evaluate, ranking
from compression_helps.models import registry
from compression_helps.sources import datasets

__all__ = ["InMemoryImages"]


class InMemoryImages:
    """A fixed set of images, decoded once, to evaluate many codecs on.

    `predict` runs `candidates.encoded_candidates` in a tf.data `map`
    (parallel, ordered) and `evaluate.classify_fn`, as `evaluate.predict`
    does. The decoded originals stay in memory (about 0.5 MB per ImageNet
    image): for thousands of images, not a data set.

    Attributes:
      description: where the images come from (`Source.description`).
      skipped: the images left out (no label, refused by the guard, cannot
        decode) and why.
      ids: `[N]` str ids of the kept images, in source order.
      labels: `[N]` int32 their labels.
    """

    def __init__(
        self,
        classifier: registry.Classifier,
        source: datasets.Source,
        batch_size: int = 8,
        jit_compile: bool = False,
    ):
        """Reads and decodes every labelled image of `source`.

        Args:
          classifier: the model and its preprocessing.
          source: labelled examples.
          batch_size: images per model call.
          jit_compile: compile the model step with XLA.

        Raises:
          ValueError: no image could be decoded.
        """

        def decode(example):
            image_bytes = example["image_bytes"]
            return {
                "index": example["index"],
                "id": example["id"],
                "label": example["label"],
                "size": tf.cast(tf.strings.length(image_bytes), tf.int64),
                "image": candidates.decode_image(image_bytes),
            }

        # Unlabelled or refused by the guard: dropped, `diagnose` says why.
        examples = source.dataset.filter(datasets.usable)
        examples = examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        kept = {k: [] for k in ("index", "id", "label", "size", "image")}
        for example in examples.ignore_errors().as_numpy_iterator():
            for key, value in example.items():
                kept[key].append(value)
        missing = set(range(source.count())) - set(kept["index"])
        self.skipped = [
            datasets.diagnose(source, i, decode) for i in sorted(missing)
        ]
        if not kept["image"]:
            raise ValueError(f"{source.description}: no image could be decoded")
        self.description = source.description
        self.ids = np.array([i.decode() for i in kept["id"]], dtype=str)
        self.labels = np.array(kept["label"], np.int32)
        shapes = np.array([image.shape for image in kept["image"]], np.int64)
        # Images differ in size: one flat buffer, cut by offsets in tf.data.
        self._flat = tf.constant(
            np.concatenate([image.ravel() for image in kept["image"]])
        )
        self._offsets = tf.constant(
            np.concatenate([[0], np.cumsum(np.prod(shapes, 1))])
        )
        self._shapes = tf.constant(shapes)
        self._original_sizes = tf.constant(np.array(kept["size"], np.int64))
        self._resize = classifier.resize
        self._batch_size = batch_size
        self._classify = evaluate.classify_fn(
            classifier, batch_size, jit_compile
        )

    @property
    def num_images(self) -> int:
        """N, the images kept."""
        return len(self.labels)

    def _original(self, i: tf.Tensor) -> tf.Tensor:
        pixels = self._flat[self._offsets[i] : self._offsets[i + 1]]
        return tf.reshape(pixels, self._shapes[i])  # [H, W, 3] uint8

    def _per_image(self, work) -> tf.data.Dataset:
        # `map` keeps the order while it runs images on parallel threads.
        return tf.data.Dataset.range(self.num_images).map(
            work, num_parallel_calls=tf.data.AUTOTUNE
        )

    def sizes(self, codecs: Sequence[int | candidates.Codec]) -> np.ndarray:
        """Only the file sizes of every image written by each codec.

        Args:
          codecs: JPEG QFs or `candidates.Codec`s.

        Returns:
          `[N, K]` int64 bytes.
        """
        codecs = candidates.as_codecs(codecs)

        def encode(i):
            image = self._original(i)
            files = tf.stack([codec.encode(image) for codec in codecs])
            return tf.cast(tf.strings.length(files), tf.int64)

        batches = self._per_image(encode).batch(256)
        return np.concatenate(list(batches.as_numpy_iterator()))

    def predict(
        self,
        codecs: Sequence[int | candidates.Codec],
        with_original: bool = True,
    ) -> ranking.Predictions:
        """Evaluates every codec (and the original file) on every image.

        Args:
          codecs: JPEG QFs or `candidates.Codec`s; may be empty.
          with_original: candidate 0 is the original file, as in
            `evaluate.predict`; False: the codecs only.

        Returns:
          The `Predictions` of the kept images, in source order.

        Raises:
          ValueError: no candidate at all.
        """
        codecs = candidates.as_codecs(codecs) if len(codecs) else ()
        if not codecs and not with_original:
            raise ValueError("nothing to evaluate: no codec, no original")

        def make(i):
            image = self._original(i)
            sizes, pixels = [], []
            if with_original:
                sizes.append(self._original_sizes[i][None])
                pixels.append(
                    candidates.model_pixels(image, self._resize)[None]
                )
            if codecs:
                encoded = candidates.encoded_candidates(
                    image, self._resize, codecs
                )
                sizes.append(encoded["sizes"])
                pixels.append(encoded["pixels"])
            shape = self._shapes[i]
            return {
                "index": i,
                "id": tf.gather(self.ids, i),
                "label": tf.gather(self.labels, i),
                "num_pixels": shape[0] * shape[1],
                "sizes": tf.concat(sizes, 0),  # [V] int64
                "pixels": tf.concat(pixels, 0),  # [V, S, S, 3] uint8
            }

        batches = self._per_image(make).batch(self._batch_size)
        arrays = evaluate.classify_batches(
            batches.prefetch(tf.data.AUTOTUNE), self._classify
        )
        return evaluate.assemble(arrays, codecs, with_original)
