"""Baseline JPEG files with custom quantization tables (DeepN-JPEG, Sec. 3).

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

DeepN-JPEG keeps JPEG's bitstream and changes only the two quantization
tables, so its files decode with any JPEG decoder. TensorFlow cannot encode
with custom tables; Pillow (libjpeg) can. `quality=` is never passed together
with `qtables=` (libjpeg would rescale the tables), and every written file's
tables are read back from its DQT segments and compared with the request.

Not reproduced: the paper's own encoder settings are not given; we use
Huffman tables optimized per image (`optimize=True`), no restart markers, no
progressive mode, and the chroma subsampling as an argument.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from deepn_jpeg import tables

__all__ = [
    "SUBSAMPLINGS",
    "ZIGZAG",
    "check_subsampling",
    "encode",
    "read_qtables",
    "tf_encode",
]

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
# ZIGZAG[k] = natural (row-major) index of the k-th coefficient in the
# zigzag order of DQT segments (ITU-T T.81, Figure A.6).
ZIGZAG = np.array(
    [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
        12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
        35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ]
)  # fmt: skip
_SOI, _DQT, _SOS, _EOI = 0xD8, 0xDB, 0xDA, 0xD9
# Markers without a length field: TEM, RST0-7 (and SOI/EOI).
_STANDALONE = {0x01, *range(0xD0, 0xD8), _SOI, _EOI}


def check_subsampling(subsampling: str) -> None:
    """Raises ValueError unless `subsampling` is one of `SUBSAMPLINGS`."""
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(
            f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}"
        )


def read_qtables(jpeg_bytes: bytes) -> dict[int, np.ndarray]:
    """The quantization tables in a JPEG file's DQT segments.

    Parses the markers up to the first scan (no Pillow), so the result does
    not depend on how a library reports tables.

    Args:
      jpeg_bytes: a JPEG file.

    Returns:
      Slot (Tq, 0..3) -> `[8, 8]` int32 table in natural order; a slot
      defined twice keeps its last definition.

    Raises:
      ValueError: not a JPEG file, or a truncated/malformed segment.
    """
    data = bytes(jpeg_bytes)
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    found: dict[int, np.ndarray] = {}
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"expected a marker at byte {pos}")
        marker = data[pos + 1] if pos + 1 < len(data) else None
        if marker is None:
            break
        if marker == 0xFF:  # Fill byte.
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            if marker == _EOI:
                break
            continue
        if pos + 4 > len(data):
            raise ValueError("truncated JPEG segment header")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if len(segment) != length - 2:
            raise ValueError("truncated JPEG segment")
        if marker == _DQT:
            found.update(_parse_dqt(segment))
        if marker == _SOS:  # Tables after the first scan are not read.
            break
        pos += 2 + length
    return found


def _parse_dqt(segment: bytes) -> dict[int, np.ndarray]:
    found = {}
    pos = 0
    while pos < len(segment):
        precision, slot = segment[pos] >> 4, segment[pos] & 0x0F
        width = 2 if precision else 1
        values = segment[pos + 1 : pos + 1 + 64 * width]
        if len(values) != 64 * width:
            raise ValueError("truncated DQT table")
        zigzag = np.frombuffer(values, ">u2" if width == 2 else "u1")
        natural = np.empty(64, np.int32)
        natural[ZIGZAG] = zigzag
        found[slot] = natural.reshape(8, 8)
        pos += 1 + 64 * width
    return found


def encode(
    image_uint8: Any,
    luma_qtable: Any,
    chroma_qtable: Any,
    subsampling: str = "4:2:0",
    optimize: bool = True,
) -> bytes:
    """Writes a baseline JPEG with the given quantization tables.

    Pillow `save(..., qtables=[luma, chroma])` without `quality=`, so libjpeg
    stores the tables unscaled; the file's tables are then read back.

    Args:
      image_uint8: `[H, W, 3]` uint8 RGB (numpy or eager tensor).
      luma_qtable: `[8, 8]` steps in [1, 255], natural order (slot 0, Y).
      chroma_qtable: `[8, 8]` steps in [1, 255] (slot 1, Cb and Cr).
      subsampling: chroma subsampling, one of `SUBSAMPLINGS`.
      optimize: optimized Huffman tables (smaller file, same pixels).

    Returns:
      The JPEG file.

    Raises:
      ValueError: bad image, table or subsampling.
      RuntimeError: the written tables differ from the requested ones.
    """
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"expected [H, W, 3] uint8, got {image.shape} {image.dtype}"
        )
    check_subsampling(subsampling)
    luma = tables.validate_qtable(luma_qtable)
    chroma = tables.validate_qtable(chroma_qtable)
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(
        buffer,
        "JPEG",
        qtables=[luma.ravel().tolist(), chroma.ravel().tolist()],
        subsampling=subsampling,
        optimize=optimize,
    )
    jpeg_bytes = buffer.getvalue()
    written = read_qtables(jpeg_bytes)
    if (
        set(written) != {0, 1}
        or not np.array_equal(written[0], luma)
        or not np.array_equal(written[1], chroma)
    ):
        raise RuntimeError(
            "the JPEG file's quantization tables differ from the requested "
            f"ones: wrote {written}"
        )
    return jpeg_bytes


def tf_encode(
    image_uint8: tf.Tensor,
    luma_qtable: Any,
    chroma_qtable: Any,
    subsampling: str = "4:2:0",
) -> tf.Tensor:
    """`encode` as a TF op, for tf.data (a `candidates.Codec`'s `encode`).

    Runs `encode` in `tf.numpy_function` on the host CPU; Pillow releases
    the GIL while it encodes, so a parallel `Dataset.map` encodes several
    images at once.

    Args:
      image_uint8: `[H, W, 3]` uint8 tensor.
      luma_qtable: `[8, 8]` luma table (fixed at trace time).
      chroma_qtable: `[8, 8]` chroma table.
      subsampling: chroma subsampling, one of `SUBSAMPLINGS`.

    Returns:
      The JPEG file, a scalar tf.string.

    Raises:
      ValueError: bad table or subsampling (at trace time).
    """
    luma = tables.validate_qtable(luma_qtable)
    chroma = tables.validate_qtable(chroma_qtable)
    check_subsampling(subsampling)

    def encode_numpy(image: np.ndarray) -> bytes:
        return encode(image, luma, chroma, subsampling)

    jpeg_bytes = tf.numpy_function(
        encode_numpy,
        [tf.convert_to_tensor(image_uint8, tf.uint8)],
        tf.string,
        stateful=False,
    )
    return tf.ensure_shape(jpeg_bytes, [])
