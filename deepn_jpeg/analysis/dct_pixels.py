"""JPEG's DCT coefficients of an image, and a differentiable way back.

The two halves of a baseline JPEG codec without its quantization and
entropy coding, in TF ops, following JPEG's (ITU-T T.81) and JFIF's (ITU-T
T.871) conventions as libjpeg implements them:

- JFIF YCbCr, full range, with the level shift of 128
  (`statistics.rgb_to_ycbcr`), not rounded;
- for 4:2:0, Cb and Cr averaged over 2x2 pixels
  (`statistics.downsample_chroma`) of the image padded to whole 16x16 MCUs;
- each plane padded to whole 8x8 blocks by replicating its last row and
  column, and libjpeg's block grids: ceil(H/8) x ceil(W/8) for Y,
  ceil(H/16) x ceil(W/16) for 4:2:0 chroma;
- the orthonormal 8x8 DCT-II (JPEG's FDCT scale), coefficient `[u, v]` with
  `u` the vertical and `v` the horizontal frequency (natural order, as
  quantization tables);
- on the way back, libjpeg's default "fancy" (triangle) chroma upsampling.

`rgb_to_coefficients` is the encoder's side; `coefficients_to_rgb` is a
decoder that rounds nothing, so gradients flow from pixels back to every
coefficient. `deepn_jpeg.sensitivity` differentiates a model's loss through
it to measure each DCT band's effect on the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from compression_helps.core import checks
from deepn_jpeg.analysis import statistics

__all__ = [
    "UPSAMPLINGS",
    "coefficients_to_rgb",
    "rgb_to_coefficients",
]

UPSAMPLINGS = ("fancy", "nearest")
_BLOCK = statistics.BLOCK_SIZE
# JFIF (ITU-T T.871) YCbCr -> RGB, derived from Kr and Kb exactly as the
# forward rows of `statistics.rgb_to_ycbcr`, so the two are inverses.
_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
_YCBCR_TO_RGB = np.array(
    [
        [1.0, 0.0, 2 * (1 - _KR)],
        [1.0, -2 * (1 - _KB) * _KB / _KG, -2 * (1 - _KR) * _KR / _KG],
        [1.0, 2 * (1 - _KB), 0.0],
    ]
)
_LEVEL_SHIFT = 128.0
# Pixels per chroma block side (`statistics.CHROMA_SUBSAMPLINGS`).
_MCU = {"4:4:4": _BLOCK, "4:2:0": 2 * _BLOCK}


def _dct_matrix() -> np.ndarray:
    """Orthonormal DCT-II, `[frequency, sample]` (JPEG's FDCT scale)."""
    n = np.arange(_BLOCK)
    basis = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * _BLOCK))
    basis[0] /= np.sqrt(2.0)
    return basis * np.sqrt(2.0 / _BLOCK)


_DCT = _dct_matrix()


def _pad_to(image: tf.Tensor, multiple: int) -> tf.Tensor:
    """Replicates the last row and column up to a multiple (as libjpeg)."""
    for axis in (0, 1):
        size = tf.shape(image)[axis]
        padded = -(-size // multiple) * multiple
        rows = tf.minimum(tf.range(padded), size - 1)
        image = tf.gather(image, rows, axis=axis)
    return image


def _blocks(plane: tf.Tensor) -> tf.Tensor:
    """`[H, W]` (multiples of 8) -> `[H/8, W/8, 8, 8]` coefficients."""
    rows, columns = tf.unstack(tf.shape(plane) // _BLOCK)
    shape = [rows, columns, _BLOCK, _BLOCK]
    return tf.reshape(statistics.block_dct(plane), shape)


def rgb_to_coefficients(
    image_uint8: tf.Tensor, chroma_subsampling: str = "4:2:0"
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """JPEG's unquantized DCT coefficients of an image (the encoder's side).

    JFIF YCbCr minus 128 (`statistics.rgb_to_ycbcr`, not rounded); for
    4:2:0 the image is padded to 16x16 MCUs and Cb, Cr averaged over 2x2
    pixels (`statistics.downsample_chroma`); each plane padded to whole
    blocks by replicating its last row and column (as libjpeg), then the
    orthonormal 8x8 DCT (`statistics.block_dct`). The block grids are
    libjpeg's: ceil(H/8) x ceil(W/8) for Y, ceil(H/16) x ceil(W/16) for
    4:2:0 chroma.

    Args:
      image_uint8: `[H, W, 3]` uint8 RGB.
      chroma_subsampling: "4:2:0" or "4:4:4".

    Returns:
      `(y, cb, cr)`, float64 `[rows, columns, 8, 8]` each, `[..., u, v]` =
      (vertical, horizontal) frequency.
    """
    checks.one_of(
        "chroma_subsampling", chroma_subsampling, statistics.CHROMA_SUBSAMPLINGS
    )
    ycbcr = statistics.rgb_to_ycbcr(image_uint8)  # [H, W, 3] float64
    chroma = _pad_to(ycbcr[..., 1:], _MCU[chroma_subsampling])
    if chroma_subsampling == "4:2:0":
        chroma = statistics.downsample_chroma(chroma)
    luma = _pad_to(ycbcr[..., :1], _BLOCK)
    return (
        _blocks(luma[..., 0]),
        _blocks(chroma[..., 0]),
        _blocks(chroma[..., 1]),
    )


def _block_idct(coefficients: tf.Tensor) -> tf.Tensor:
    """`[B, rows, columns, 8, 8]` -> `[B, 8 rows, 8 columns]` samples."""
    basis = tf.constant(_DCT, coefficients.dtype)
    samples = tf.einsum("um,bhwuv,vn->bhmwn", basis, coefficients, basis)
    shape = tf.shape(coefficients)
    return tf.reshape(samples, [shape[0], shape[1] * _BLOCK, shape[2] * _BLOCK])


def _upsample(planes: tf.Tensor, axis: int, fancy: bool) -> tf.Tensor:
    """Doubles one axis: replicate, or libjpeg's 3/4-1/4 "fancy" filter."""
    size = tf.shape(planes)[axis]
    even = odd = planes
    if fancy:  # Edge samples are replicated, as libjpeg's h2v2_fancy.
        before = tf.gather(planes, tf.maximum(tf.range(size) - 1, 0), axis=axis)
        after = tf.gather(
            planes, tf.minimum(tf.range(size) + 1, size - 1), axis=axis
        )
        even, odd = 0.75 * planes + 0.25 * before, 0.75 * planes + 0.25 * after
    shape = tf.shape(planes)
    doubled = tf.concat([shape[:axis], [2 * size], shape[axis + 1 :]], 0)
    return tf.reshape(tf.stack([even, odd], axis + 1), doubled)


def _straight_through_clip(samples: tf.Tensor, clip: bool) -> tf.Tensor:
    """Values clipped to [0, 255], gradient as if not (identity)."""
    if not clip:
        return samples
    clipped = tf.clip_by_value(samples, 0.0, 255.0)
    return samples + tf.stop_gradient(clipped - samples)


def coefficients_to_rgb(
    y: tf.Tensor,
    cb: tf.Tensor,
    cr: tf.Tensor,
    chroma_subsampling: str = "4:2:0",
    upsampling: str = "fancy",
    size: tf.Tensor | Sequence[int] | None = None,
    clip: bool = False,
) -> tf.Tensor:
    """A differentiable JPEG decoder: dequantized coefficients -> RGB.

    Orthonormal 8x8 inverse DCT (the inverse of `rgb_to_coefficients`),
    plus 128; for 4:2:0, chroma cropped to ceil(H/2) x ceil(W/2) and
    upsampled 2x in each direction ("fancy": libjpeg's default triangle
    filter, 3/4 of the nearest and 1/4 of the next chroma sample, edges
    replicated, as `tf.io.decode_jpeg`; "nearest": replicated); JFIF YCbCr
    -> RGB. Nothing is rounded. libjpeg also limits the Y, Cb, Cr samples
    and the RGB values to [0, 255]: `clip` does the same to the values but
    passes gradients through unchanged (straight-through), so that the
    gradient is the linear decoder's everywhere.

    Args:
      y: `[B, rows, columns, 8, 8]` float luma coefficients.
      cb: `[B, rows', columns', 8, 8]`: the grid of `y` for 4:4:4, of the
        image's 16x16 MCUs for 4:2:0.
      cr: like `cb`.
      chroma_subsampling: "4:2:0" or "4:4:4".
      upsampling: "fancy" or "nearest" (4:2:0 only).
      size: `(H, W)` of the image; None: the luma blocks' `8 * (rows,
        columns)`.
      clip: limit samples and pixels to [0, 255] as libjpeg
        (straight-through); False: a linear map.

    Returns:
      `[B, H, W, 3]` RGB, in [0, 255] up to the coefficients' own
      overshoot (none with `clip`), in `y`'s dtype.
    """
    checks.one_of(
        "chroma_subsampling", chroma_subsampling, statistics.CHROMA_SUBSAMPLINGS
    )
    checks.one_of("upsampling", upsampling, UPSAMPLINGS)
    y = tf.convert_to_tensor(y)
    luma = _block_idct(y) + _LEVEL_SHIFT  # [B, H', W']
    if size is None:
        size = tf.shape(luma)[1:]
    height, width = size[0], size[1]
    chroma = tf.stack(
        [_block_idct(tf.cast(c, y.dtype)) + _LEVEL_SHIFT for c in (cb, cr)],
        -1,
    )  # [B, H'', W'', 2]
    luma = _straight_through_clip(luma, clip)
    chroma = _straight_through_clip(chroma, clip)
    if chroma_subsampling == "4:2:0":
        chroma = chroma[:, : (height + 1) // 2, : (width + 1) // 2]
        for axis in (1, 2):
            chroma = _upsample(chroma, axis, upsampling == "fancy")
    ycbcr = tf.concat(
        [luma[:, :height, :width, None], chroma[:, :height, :width]], -1
    )
    ycbcr -= tf.constant([0.0, _LEVEL_SHIFT, _LEVEL_SHIFT], y.dtype)
    rgb = tf.tensordot(ycbcr, tf.constant(_YCBCR_TO_RGB.T, y.dtype), axes=1)
    return _straight_through_clip(rgb, clip)
