"""Classify every candidate of every image; store ranks, sizes and top-5.

SPEC.md ("Ranks"): the rank of the true label is 1 + the number of classes
with a strictly higher probability (1 = top-1); top-k correct iff
rank <= k. One model call per batch classifies all candidates of the batch's
images (B images -> B * V model inputs).

Runs are split into shards of consecutive images. Each finished shard is
written atomically to `<workdir>/shards/`, so an interrupted run resumes
where it stopped; batches never cross a shard, so a resumed run computes
exactly what an uninterrupted one does. An image that cannot be evaluated
(empty, corrupt, unknown label, ...) is skipped and recorded with its reason;
the run goes on.

`predict_models` evaluates several models in one pass: one JPEG stage
(each image decoded once, each candidate encoded and decoded once), each
model its own crop, resize and normalisation; every model's outputs are
those of a `predict` run of it alone. With a candidate store
(`candidate_store`) the encoding is read from the store instead of done.

`in_memory.InMemoryImages` is the same evaluation for many codecs on one
fixed set of images (a table search): the originals are decoded once and
kept. Both modes run `candidates.encoded_candidates` per image and
`classify_fn` and `classify_batches` per batch; the results and the rank
rule are `ranking`'s.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from compression_helps.core import progress, rundir
from compression_helps.engine import (
    candidate_store,
    candidates,
    ranking,
)
from compression_helps.models import registry
from compression_helps.sources import datasets

__all__ = [
    "SHARD_SIZE",
    "assemble",
    "classify_batches",
    "classify_fn",
    "model_probabilities",
    "predict",
    "predict_models",
]

SHARD_SIZE = 256  # Images per shard file: at most this much work is redone.
# What `classify_batches` collects (with "ids"), and its dtypes: per image,
# and per image and model (a model axis after the image axis).
_IMAGE_DTYPES = {
    "index": np.int64,
    "sizes": np.int64,
    "labels": np.int32,
    "num_pixels": np.int64,
}
_MODEL_DTYPES = {"ranks": np.int32, "topk": np.int32, "topk_probs": np.float32}


def classify_fn(
    classifier: registry.Classifier, batch_size: int, jit_compile: bool = False
):
    """The compiled model step of the evaluation.

    Args:
      classifier: the model and its normalisation.
      batch_size: images per call; smaller batches are padded to it.
      jit_compile: compile the step with XLA (for GPUs/TPUs).

    Returns:
      `(pixels [b, V, S, S, 3] uint8, labels [b] int32) -> (ranks [b, V],
      topk [b, V, 5], topk_probs [b, V, 5])`.
    """

    @tf.function(jit_compile=jit_compile)
    def classify(pixels: tf.Tensor, labels: tf.Tensor):
        # pixels: [b, V, S, S, 3] uint8 with b <= batch_size; labels: [b].
        shape = tf.shape(pixels)
        flat = tf.reshape(pixels, tf.concat([[-1], shape[2:]], 0))
        probs = model_probabilities(
            classifier, tf.cast(flat, tf.float32), batch_size * shape[1]
        )  # [b*V, C]
        probs = tf.reshape(probs, [shape[0], shape[1], -1])  # [b, V, C]
        ranks = ranking.ranks_of(
            probs, tf.broadcast_to(labels[:, None], shape[:2])
        )
        top = tf.math.top_k(probs, ranking.TOP_K)
        return ranks, top.indices, top.values

    return classify


def model_probabilities(
    classifier: registry.Classifier, pixels: tf.Tensor, batch_size: int
) -> tf.Tensor:
    """The model step: the classifier's probabilities of a batch of pixels.

    The one place the model is called on pixels: the evaluation
    (`classify_fn`) and the band sensitivities (`deepn_jpeg.band_sensitivity`,
    whose gradients flow through it). The batch is padded with zero images
    to `batch_size`: each image's outputs then do not depend on how many
    others share its batch (the kernels a backend picks can depend on the
    batch size), so sharded, resumed and tf.data-service runs give
    identical numbers.

    Args:
      classifier: the model and its normalisation.
      pixels: `[b, S, S, 3]` float32 resized pixels in [0, 255], b <=
        `batch_size`.
      batch_size: images per model call.

    Returns:
      `[b, C]` float32 probabilities (also under a mixed-precision policy).
    """
    count = tf.shape(pixels)[0]
    pixels = tf.pad(pixels, [[0, batch_size - count], [0, 0], [0, 0], [0, 0]])
    inputs = classifier.preprocess_input(pixels)
    outputs = classifier.model(inputs, training=False)
    return tf.cast(outputs, tf.float32)[:count]


def predict_models(
    classifiers: Sequence[registry.Classifier],
    source: datasets.Source,
    codecs: Sequence[int | candidates.Codec] = candidates.QUALITIES,
    batch_size: int = 8,
    run: rundir.RunDir | None = None,
    shard_size: int = SHARD_SIZE,
    data_service: str | None = None,
    jit_compile: bool = False,
    verbose: bool = True,
    require_label: bool = True,
    store: candidate_store.Store | None = None,
) -> tuple[list[ranking.Predictions], list[rundir.SkippedImage]]:
    """Evaluates every candidate of every image of `source` with each model.

    One JPEG stage for all models: each batch of candidates is classified
    by every model, each with its own crop, resize and normalisation.

    Args:
      classifiers: the models and their preprocessing.
      source: labelled examples (any examples, see `require_label`).
      codecs: candidates 1..V-1, JPEG QFs or `candidates.Codec`s
        (candidate 0 is the original).
      batch_size: images per model call.
      run: where finished shards are kept (`RunDir.map_shards`); None: in
        memory only.
      shard_size: images per shard.
      data_service: tf.data service dispatcher address: the JPEG work runs on
        its workers (see `candidates.candidate_batches`).
      jit_compile: compile the model step with XLA.
      verbose: show a progress bar.
      require_label: skip images without a label. False: evaluate them too
        (label -1); their ranks then mean nothing, but their top-5 classes,
        which the label-free selectors use, do.
      store: read the candidate files of `source` from this store (filled:
        `Store.fill`) instead of encoding them; None: encode.

    Returns:
      The `ranking.Predictions` of each classifier, in order (the same
      images, in the order of `source`), and the skipped images.

    Raises:
      ValueError: no image could be evaluated, or `store` holds other
        candidates than `codecs`.
    """
    codecs = candidates.as_codecs(codecs)
    if store is not None:
        store.check_candidates(codecs)
    num_examples = source.count()
    # One resize per model: each candidate is decoded once for all of them.
    resizes = tuple(c.resize for c in classifiers)

    def example_fn(example):  # Eager re-run of one example's work.
        return candidates.make_candidates(example, resizes, codecs)

    steps = tuple(classify_fn(c, batch_size, jit_compile) for c in classifiers)
    usable = functools.partial(datasets.usable, require_label=require_label)

    def compute(start: int, stop: int, report) -> dict[str, np.ndarray]:
        # Files the guard refused (and unlabelled images, where a label is
        # required) are dropped here and recorded by `diagnose`.
        job_name = f"evaluate-{uuid.uuid4().hex}" if data_service else None
        if store is None:
            batches = candidates.candidate_batches(
                source.read(start, stop).filter(usable),
                resizes,
                codecs,
                batch_size,
                data_service=data_service,
                job_name=job_name,
            )
        else:
            batches = candidates.stored_candidate_batches(
                store.read(start, stop).filter(usable),
                resizes,
                batch_size,
                data_service=data_service,
                job_name=job_name,
            )
        arrays = classify_batches(batches, steps, report) or {}
        done = set(arrays.pop("index", np.zeros([0])).tolist())
        missing = sorted(set(range(start, stop)) - done)
        skipped = [
            datasets.diagnose(source, i, example_fn, require_label)
            for i in missing
        ]
        arrays["skipped"] = rundir.SkippedImage.to_array(skipped)
        return arrays

    bar = progress.Progress(
        num_examples, "image", "evaluating", verbose=verbose
    )
    shards = (
        # Named for the per-model layout ([N, M, V] arrays): shards of the
        # earlier one-model layout in an old workdir are computed again.
        run.map_shards(
            "model_predictions", num_examples, shard_size, compute, bar
        )
        if run is not None
        else _in_memory_shards(num_examples, shard_size, compute, bar)
    )
    parts, skipped = [], []
    with bar:
        for arrays in shards:
            skipped.extend(rundir.SkippedImage.from_array(arrays["skipped"]))
            if "ranks" in arrays:
                parts.append(arrays)
    if not parts:
        first = (
            f" (first: {skipped[0].path}: {skipped[0].reason})"
            if skipped
            else ""
        )
        raise ValueError(
            f"{source.description}: none of {num_examples} images could be "
            f"evaluated{first}"
        )
    per_image = {
        key: np.concatenate([p[key] for p in parts])
        for key in ("ids", *_IMAGE_DTYPES, *_MODEL_DTYPES)
        if key != "index"
    }
    predictions = [
        assemble(per_image, codecs, with_original=True, model=m)
        for m in range(len(classifiers))
    ]
    return predictions, skipped


def predict(
    classifier: registry.Classifier, source: datasets.Source, *args, **kwargs
) -> tuple[ranking.Predictions, list[rundir.SkippedImage]]:
    """`predict_models` of one classifier.

    Args:
      classifier: the model and its preprocessing.
      source: labelled examples.
      *args: `predict_models`' further arguments (codecs, batch_size, ...).
      **kwargs: the same, by name.

    Returns:
      The classifier's `ranking.Predictions` and the skipped images.
    """
    (predictions,), skipped = predict_models(
        [classifier], source, *args, **kwargs
    )
    return predictions, skipped


def assemble(
    per_image: dict[str, np.ndarray],
    codecs: Sequence[candidates.Codec],
    with_original: bool,
    model: int = 0,
) -> ranking.Predictions:
    """`ranking.Predictions` of one model from per-image arrays and the codecs.

    Args:
      per_image: `classify_batches`' arrays.
      codecs: the candidates after the original.
      with_original: candidate 0 is the original file.
      model: which of `classify_batches`' models.

    Returns:
      The predictions, with the candidates' curves, qualities and names.
    """
    first = [candidates.ORIGINAL] if with_original else []
    return ranking.Predictions(
        ids=per_image["ids"],
        sizes=per_image["sizes"],
        labels=per_image["labels"],
        num_pixels=per_image["num_pixels"],
        **{key: per_image[key][:, model] for key in _MODEL_DTYPES},
        curves=np.array(first + [c.curve for c in codecs], dtype=str),
        qualities=np.array(
            [0] * len(first) + [c.quality for c in codecs]
        ).astype(np.int32),
        names=np.array(first + [c.name for c in codecs], dtype=str),
    )


def _in_memory_shards(num_examples, shard_size, compute, bar):
    for start in range(0, num_examples, shard_size):
        stop = min(start + shard_size, num_examples)
        with bar.part(stop - start) as report:
            arrays = compute(start, stop, report)
        yield arrays


def classify_batches(
    batches: tf.data.Dataset,
    classify,
    report: Callable[[int], None] | None = None,
) -> dict | None:
    """Model outputs of all batches, in example index order.

    Args:
      batches: `make_candidates`-like batches with "index", "id", "label",
        "sizes", "num_pixels" and "pixels".
      classify: `classify_fn`'s step; or a tuple of steps, one per model,
        when "pixels" is a tuple (a `resize` per model).
      report: called with each batch's number of images once every model
        has classified it (progress).

    Returns:
      Per-image arrays (Predictions' per-image fields and "index"; "ranks",
      "topk" and "topk_probs" with a model axis after the image axis,
      `[N, M, ...]`, M = 1 for one step), or None for no batch.
    """
    steps = tf.nest.flatten(classify)
    outputs = {k: [] for k in (*_IMAGE_DTYPES, *_MODEL_DTYPES)}
    ids = []
    for batch in batches:
        pixels = tf.nest.flatten(batch["pixels"])  # One per model.
        per_model = [
            step(p, batch["label"])
            for step, p in zip(steps, pixels, strict=True)
        ]
        for i, key in enumerate(_MODEL_DTYPES):
            outputs[key].append(np.stack([o[i].numpy() for o in per_model], 1))
        outputs["labels"].append(batch["label"].numpy())
        for key in ("index", "sizes", "num_pixels"):
            outputs[key].append(batch[key].numpy())
        ids.extend(i.decode() for i in batch["id"].numpy())
        if report is not None:
            report(len(batch["label"]))
    if not ids:
        return None
    dtypes = {**_IMAGE_DTYPES, **_MODEL_DTYPES}
    arrays = {
        k: np.concatenate(v).astype(dtypes[k]) for k, v in outputs.items()
    }
    arrays["ids"] = np.array(ids, dtype=str)
    order = np.argsort(arrays["index"], kind="stable")
    return {k: v[order] for k, v in arrays.items()}
