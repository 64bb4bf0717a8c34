"""The multi-input model of Yang et al. 2021 and its input pipeline.

En-Hui Yang, Hossam Amer, Yanbing Jiang. "Compression Helps Deep Learning in
Image Classification". Entropy 23(7):881, 2021.
https://doi.org/10.3390/e23070881

SPEC.md ("Multi-input model"): the original and its JPEG versions at every
QF (V = 11 inputs) go through ONE pretrained backbone (shared weights,
frozen), the V pooled feature vectors are concatenated and a new softmax
layer over the classes is trained on them ("partially trained": only the
head).

    {"original": [B, S, S, 3] uint8, "qf100": ..., ..., "qf10": ...}
      -> cast + the backbone's own normalisation (`Preprocess`, per input)
      -> the shared backbone up to its pooled features: V x [B, F]
      -> stacked [B, V, F] -> head: flatten + Dense softmax -> [B, C]

The head is a small model of its own (`build_head`), so the same layer and
weights are trained on cached features (`features.cache_features`, one
backbone pass per candidate, since the backbone is frozen) and used in the
full model. `train` trains it, `serving` exports it as a SavedModel.
`init_head(..., "backbone")` copies the backbone's classifier into the
original's slice of the head and zeroes the rest, so training starts exactly
at the backbone's predictions on the original.

Not reproduced: the paper's training schedule (not given in the paper) and
its ImageNet-scale training set; the crop and resize before the candidates
are the backbone's own (`registry.Classifier.resize`), applied to every
decoded candidate, as in the candidate evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from compression_helps.engine import candidates
from compression_helps.models import registry

__all__ = [
    "BACKBONE_LAYER",
    "HEAD_INITS",
    "HEAD_LAYER",
    "ORIGINAL",
    "Preprocess",
    "backbone_alone",
    "build_head",
    "build_multi_input_model",
    "features_model",
    "init_head",
    "input_names",
    "make_dataset",
    "split_classifier",
    "to_inputs",
]

ORIGINAL = "original"
# Layer names inside the multi-input model.
BACKBONE_LAYER = "backbone"
HEAD_LAYER = "head"
_STACK_LAYER = "stack"  # Its output is the head's [B, V, F] input.
# "backbone": start at the backbone's predictions; "random": Glorot uniform.
HEAD_INITS = ("backbone", "random")


def input_names(
    qualities: Sequence[int | candidates.Codec] = candidates.QUALITIES,
) -> tuple[str, ...]:
    """Names of the V model inputs: `original`, then one per candidate.

    Args:
      qualities: JPEG QFs (or `candidates.Codec`s) of candidates 1..V-1.

    Returns:
      `("original", "qf100", ..., "qf10")` for the default qualities: the
      candidate names of `candidates.as_codecs`.
    """
    return (ORIGINAL,) + tuple(c.name for c in candidates.as_codecs(qualities))


@keras.saving.register_keras_serializable(package="compression_helps")
class Preprocess(keras.layers.Layer):
    """uint8 pixels -> float32, normalised the way a registered backbone was.

    The normalisation is looked up by registry name, so the layer saves and
    loads with `.keras` files (a bare function would not).
    """

    def __init__(self, model: str | None = None, **kwargs):
        """Initialises the layer.

        Args:
          model: a `registry.REGISTRY` name whose `preprocess_input` to apply
            after the cast, or None for none (model files normalise inside).
          **kwargs: `keras.layers.Layer` arguments.
        """
        super().__init__(**kwargs)
        self.model = model
        if model is None:
            self._normalise = None
        elif model in registry.REGISTRY:
            self._normalise = registry.REGISTRY[model]().preprocess_input
        else:
            names = sorted(registry.REGISTRY)
            raise ValueError(f"unknown model {model!r}: use one of {names}")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """`[B, S, S, 3]` uint8 -> `[B, S, S, 3]` float32 model input."""
        pixels = keras.ops.cast(inputs, "float32")  # [0, 255]
        if self._normalise is None:
            return pixels
        return self._normalise(pixels)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Same shape as the input."""
        return input_shape

    def get_config(self) -> dict:
        """The constructor arguments."""
        return {**super().get_config(), "model": self.model}


def _registry_name(classifier: registry.Classifier) -> str | None:
    # Registry models take normalised inputs; model files normalise inside.
    return classifier.name if classifier.name in registry.REGISTRY else None


def split_classifier(
    model: keras.Model,
) -> tuple[keras.Model, keras.layers.Dense]:
    """Splits a classifier into its pooled-feature extractor and its head.

    Args:
      model: `[B, S, S, 3]` float inputs -> `[B, C]` probabilities, whose last
        layer is a softmax `Dense` fed by pooled features, possibly through
        `Dropout` (Keras applications, `efficientnet_lite`).

    Returns:
      `(extractor, dense)`: a model sharing `model`'s layers that maps its
      inputs to the `[B, F]` pooled features (skipping the dropout: the
      features are the same at inference), and the classifier layer.

    Raises:
      ValueError: the last layer is not a softmax `Dense`.
    """
    dense = model.layers[-1]
    if not (
        isinstance(dense, keras.layers.Dense)
        and dense.activation is keras.activations.softmax
    ):
        raise ValueError(
            f"{model.name}: the last layer must be a softmax Dense layer, got "
            f"{dense.__class__.__name__} {dense.name!r}"
        )
    features = dense.input
    dropouts = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout)
    ]
    producer = [layer for layer in dropouts if layer.output is features]
    while producer:
        features = producer[0].input
        producer = [layer for layer in dropouts if layer.output is features]
    extractor = keras.Model(model.inputs, features, name=BACKBONE_LAYER)
    return extractor, dense


def build_head(
    num_candidates: int,
    num_features: int,
    num_classes: int,
    name: str = HEAD_LAYER,
) -> keras.Model:
    """The new softmax layer over the concatenated pooled features.

    Args:
      num_candidates: V.
      num_features: F, pooled features per candidate.
      num_classes: C.
      name: model name.

    Returns:
      `[B, V, F]` float32 features -> `[B, C]` probabilities; its `Flatten`
      concatenates the V feature vectors in input order (original first).
    """
    features = keras.Input((num_candidates, num_features), name="features")
    concatenated = keras.layers.Flatten(name="concatenate")(features)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", name="classifier"
    )(concatenated)
    return keras.Model(features, probabilities, name=name)


def init_head(
    head: keras.Model,
    backbone_classifier: keras.layers.Dense | None = None,
    head_init: str = "backbone",
    seed: int | None = None,
) -> None:
    """Sets the head's weights.

    "backbone": the rows of the original's features get the backbone
    classifier's kernel and the bias its bias; every other weight is zero,
    so the head's output equals the backbone's on the original.

    Args:
      head: a `build_head` model.
      backbone_classifier: the backbone's softmax `Dense` (for "backbone").
      head_init: one of `HEAD_INITS`.
      seed: for "random".

    Raises:
      ValueError: unknown `head_init`, or a classifier of another shape.
    """
    dense = head.get_layer("classifier")
    kernel_shape = tuple(dense.kernel.shape)  # [V * F, C]
    if head_init == "random":
        initializer = keras.initializers.GlorotUniform(seed=seed)
        dense.kernel.assign(initializer(kernel_shape))
        dense.bias.assign(np.zeros(kernel_shape[1], np.float32))
        return
    if head_init != "backbone":
        raise ValueError(f"head_init must be one of {HEAD_INITS}: {head_init}")
    if backbone_classifier is None:
        raise ValueError('head_init="backbone" needs the backbone classifier')
    source_kernel = keras.ops.convert_to_numpy(backbone_classifier.kernel)
    num_features, num_classes = source_kernel.shape
    if num_classes != kernel_shape[1] or kernel_shape[0] % num_features:
        raise ValueError(
            f"backbone classifier {source_kernel.shape} does not fit a head "
            f"with kernel {kernel_shape}"
        )
    kernel = np.zeros(kernel_shape, np.float32)
    kernel[:num_features] = source_kernel  # The original comes first.
    dense.kernel.assign(kernel)
    dense.bias.assign(keras.ops.convert_to_numpy(backbone_classifier.bias))


def build_multi_input_model(
    classifier: registry.Classifier,
    qualities: Sequence[int | candidates.Codec] = candidates.QUALITIES,
    trainable: bool = False,
    head_init: str = "backbone",
    seed: int | None = None,
    head: keras.Model | None = None,
) -> keras.Model:
    """SPEC.md "Multi-input model": V inputs, one shared backbone, one head.

    Args:
      classifier: the backbone (`registry.load_classifier`); its layers are
        shared with the new model, not copied.
      qualities: JPEG QFs of candidates 1..V-1 (inputs `input_names`).
      trainable: whether the backbone trains too; False (SPEC.md) freezes it,
        which also runs its batch normalisation in inference mode.
      head_init: one of `HEAD_INITS`, for a new head.
      seed: for a random head.
      head: an existing `build_head` model to use (e.g. one trained on
        cached features); None: a new one, initialised by `head_init`.

    Returns:
      `{name: [B, S, S, 3] uint8}` -> `[B, C]` probabilities, with layers
      `BACKBONE_LAYER` (pooled features) and `HEAD_LAYER`.
    """
    names = input_names(qualities)
    extractor, dense = split_classifier(classifier.model)
    extractor.trainable = trainable
    num_features = int(extractor.output.shape[-1])
    if head is None:
        head = build_head(len(names), num_features, classifier.num_classes)
        init_head(head, dense, head_init, seed)
    size = classifier.image_size
    inputs = {
        name: keras.Input((size, size, 3), dtype="uint8", name=name)
        for name in names
    }
    stacked = []
    for name in names:
        pixels = Preprocess(
            _registry_name(classifier), name=f"preprocess_{name}"
        )(inputs[name])
        features = extractor(pixels)  # [B, F], the same instance for all.
        stacked.append(
            keras.layers.Reshape((1, num_features), name=f"features_{name}")(
                features
            )
        )
    features = keras.layers.Concatenate(axis=1, name=_STACK_LAYER)(stacked)
    probabilities = head(features)  # [B, C]
    return keras.Model(inputs, probabilities, name="multi_input")


def backbone_alone(classifier: registry.Classifier) -> keras.Model:
    """The backbone on the original only, with the multi-input model's input.

    The baseline the multi-input model is compared with: its predictions
    are those of a `head_init="backbone"` model before training.

    Args:
      classifier: the backbone; its layers are shared, not copied.

    Returns:
      `[B, S, S, 3]` uint8 -> `[B, C]` probabilities.
    """
    size = classifier.image_size
    images = keras.Input((size, size, 3), dtype="uint8", name=ORIGINAL)
    pixels = Preprocess(_registry_name(classifier))(images)
    return keras.Model(images, classifier.model(pixels), name="backbone_alone")


def features_model(model: keras.Model) -> keras.Model:
    """The multi-input model up to the head: inputs -> `[B, V, F]` features.

    Args:
      model: a `build_multi_input_model` model.

    Returns:
      A model sharing its layers.
    """
    features = model.get_layer(_STACK_LAYER).output
    return keras.Model(model.inputs, features, name="multi_input_features")


def to_inputs(
    batch: Mapping[str, tf.Tensor], names: Sequence[str]
) -> dict[str, tf.Tensor]:
    """`make_candidates` pixels `[B, V, S, S, 3]` -> the model's input dict.

    Args:
      batch: a dict with `"pixels"` (see `candidates.make_candidates`).
      names: `input_names(qualities)`, in candidate order.

    Returns:
      `{name: [B, S, S, 3] uint8}`.
    """
    return {name: batch["pixels"][:, i] for i, name in enumerate(names)}


def make_dataset(
    dataset: tf.data.Dataset,
    resize: Callable[[tf.Tensor], tf.Tensor],
    qualities: Sequence[int | candidates.Codec] = candidates.QUALITIES,
    batch_size: int = 32,
    training: bool = False,
    seed: int | None = None,
    shuffle_buffer: int = 1024,
    data_service: str | None = None,
    with_ids: bool = False,
) -> tf.data.Dataset:
    """Batches of the model's inputs and labels, built on host threads.

    The candidate work (encode, decode, the model's crop and resize, rounding
    to uint8) is `candidates.candidate_batches`; bad images are dropped.

    Args:
      dataset: example dicts (see `datasets`).
      resize: the backbone's crop and resize (`registry.Classifier.resize`).
      qualities: JPEG QFs of candidates 1..V-1.
      batch_size: images per batch.
      training: shuffle (before the JPEG work, so that the buffer holds only
        files); one epoch, in the order `seed` gives (`checkpoint.fit`
        builds each epoch's data set with its own seed).
      seed: shuffle seed.
      shuffle_buffer: examples in the shuffle buffer.
      data_service: tf.data service dispatcher (`grpc://host:port`) whose
        workers do the JPEG work; batches then arrive in any order. Each
        iteration (each epoch) is a job of its own.
      with_ids: add the images' ids to each batch.

    Returns:
      `({name: [B, S, S, 3] uint8}, [B] int32 labels)`, and `[B]` string
      ids `with_ids`.
    """
    if training:  # Before the JPEG work: the buffer holds only files.
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    names = input_names(qualities)
    batches = candidates.candidate_batches(
        dataset,
        resize,
        qualities,
        batch_size=batch_size,
        data_service=data_service,
    )

    def split(batch):
        inputs = to_inputs(batch, names)
        if with_ids:
            return inputs, batch["label"], batch["id"]
        return inputs, batch["label"]

    return batches.map(split, num_parallel_calls=tf.data.AUTOTUNE)
