"""JPEG files with custom quantization tables (DeepN-JPEG, Sec. 3).

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

DeepN-JPEG keeps JPEG's bitstream and changes only the two quantization
tables, so its files decode with any JPEG decoder. TensorFlow cannot encode
with custom tables; the two encoders here can (`ENCODERS`):

- "libjpeg": the libjpeg-turbo that Pillow bundles (3.2.0 in Pillow 13.0;
  `PIL.features.version("libjpeg_turbo")` names the one installed).
  Baseline (sequential) files with Huffman tables optimized per image. The
  encoder of SPEC.md ("Writing the files") and of the reference curve.
- "mozjpeg" (SPEC.md, "Encoders"): mozjpeg 4.0.3 as built into the `jpeglib`
  package (1.0.2), with mozjpeg's defaults: progressive files with scans
  optimized per image, trellis quantization of the AC and DC coefficients (each
  block's quantized values are chosen for rate and distortion together, so the
  same tables give smaller files at nearly the same quality), optimized Huffman
  tables. The tables are written as given (no table optimization).

Tables are never given together with a quality (libjpeg would rescale them),
and every written file's tables are read back from its DQT segments and
compared with the request. `encode` and `tf_encode` take the tables either
as two arrays or as a table set (`tables.TableSet`, a tables file or a
shipped set's name), which may fix its subsampling and encoder.

Not reproduced: the paper's own encoder settings are not given; we use no
restart markers and take the chroma subsampling as an argument.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from typing import Any

import jpeglib
import numpy as np
import tensorflow as tf
from PIL import Image, ImageFile

from compression_helps.core import checks
from deepn_jpeg.jpeg import markers, tables

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_SUBSAMPLING",
    "ENCODERS",
    "MAX_SIDE",
    "SUBSAMPLINGS",
    "ZIGZAG",
    "check_encoder",
    "check_subsampling",
    "encode",
    "read_qtables",
    "tf_encode",
]

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
ENCODERS = ("libjpeg", "mozjpeg")
# What a call that does not say (and whose table set does not fix) gets.
DEFAULT_SUBSAMPLING = "4:2:0"
DEFAULT_ENCODER = "libjpeg"
# ZIGZAG[k] = natural (row-major) index of the k-th coefficient of a DQT
# segment; `read_qtables` reads a file's tables (`markers`).
ZIGZAG = markers.ZIGZAG
read_qtables = markers.read_qtables
_SOF_PROGRESSIVE = 0xC2  # What mozjpeg writes with its defaults.
# The longest side libjpeg (and mozjpeg) writes: JPEG_MAX_DIMENSION.
MAX_SIDE = 65500
# Pillow's buffer for an optimized file is 2 bytes a pixel, and libjpeg
# cannot suspend in its optimizing pass, so a larger file fails to write;
# it is written again with buffers of 4, 8, ... bytes a pixel, up to more
# than any file can take (64 coefficients of at most 27 bits per block of
# each of 3 planes, doubled by byte stuffing: about 21 bytes a pixel).
_RETRY_BYTES_PER_PIXEL = (4, 8, 16, 32)
_PILLOW_BUFFER_LOCK = threading.Lock()
_MOZJPEG_LIBRARY = "mozjpeg403"
# jpeglib's sampling factors, (vertical, horizontal) for Y, Cb and Cr.
_MOZJPEG_SAMPLING = {
    "4:4:4": ((1, 1), (1, 1), (1, 1)),
    "4:2:2": ((1, 2), (1, 1), (1, 1)),
    "4:2:0": ((2, 2), (1, 1), (1, 1)),
}
# jpeglib writes to a path only: RAM-backed files where the system has them.
_TEMP_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
_MOZJPEG_LOCK = threading.Lock()


def check_subsampling(subsampling: str) -> None:
    """Raises ValueError unless `subsampling` is one of `SUBSAMPLINGS`."""
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(
            f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}"
        )


def check_encoder(encoder: str) -> None:
    """Raises ValueError unless `encoder` is one of `ENCODERS`."""
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")


def encode(
    image_uint8: Any,
    luma_qtable: Any = None,
    chroma_qtable: Any = None,
    subsampling: str | None = None,
    optimize: bool = True,
    encoder: str | None = None,
    *,
    tables: str | tables.TableSet | None = None,
    scale: int | None = None,
) -> bytes:
    """Writes a JPEG file with the given quantization tables.

    The tables come either as `luma_qtable` and `chroma_qtable`, or as a
    table set `tables`; `scale` then scales both IJG-style. Subsampling and
    encoder: the argument, else what the table set fixes, else
    `DEFAULT_SUBSAMPLING` / `DEFAULT_ENCODER`; an argument that differs from
    what the set fixes is refused.

    Args:
      image_uint8: `[H, W, 3]` uint8 RGB (numpy or eager tensor).
      luma_qtable: `[8, 8]` steps in [1, 255], natural order (slot 0, Y).
      chroma_qtable: `[8, 8]` steps in [1, 255] (slot 1, Cb and Cr).
      subsampling: chroma subsampling, one of `SUBSAMPLINGS`.
      optimize: libjpeg only: optimized Huffman tables (smaller file, same
        pixels); mozjpeg always optimizes them.
      encoder: one of `ENCODERS` (see the module docstring).
      tables: a `tables.TableSet`, a tables file or the name of a shipped
        set (`tables.load_tableset`), instead of the two tables.
      scale: IJG quality-like factor 1..100 applied to both tables
        (`tables.scale_qtable`; 50 = the tables as given); None: unscaled.

    Returns:
      The JPEG file.

    Raises:
      ValueError: bad image, tables, table file, subsampling, encoder or
        scale; tables given both ways or not at all; a setting that
        conflicts with the table set.
      OSError: a tables file that cannot be read, or an unknown name.
      RuntimeError: the written tables differ from the requested ones.
    """
    settings = _settings(
        luma_qtable,
        chroma_qtable,
        subsampling,
        encoder,
        optimize,
        tables,
        scale,
    )
    return _write(image_uint8, settings, optimize)


def tf_encode(
    image_uint8: tf.Tensor,
    luma_qtable: Any = None,
    chroma_qtable: Any = None,
    subsampling: str | None = None,
    encoder: str | None = None,
    *,
    tables: str | tables.TableSet | None = None,
    scale: int | None = None,
) -> tf.Tensor:
    """`encode` as a TF op, for tf.data (a `candidates.Codec`'s `encode`).

    Tables and settings are checked once, here (at trace time); each image
    then only has its file's tables checked. Runs in `tf.numpy_function` on
    the host CPU; both encoders release the GIL while they encode, so a
    parallel `Dataset.map` encodes several images at once.

    Args:
      image_uint8: `[H, W, 3]` uint8 tensor.
      luma_qtable: `[8, 8]` luma table (fixed at trace time).
      chroma_qtable: `[8, 8]` chroma table.
      subsampling: chroma subsampling, one of `SUBSAMPLINGS`.
      encoder: one of `ENCODERS`.
      tables: a table set instead of the two tables (see `encode`).
      scale: IJG quality-like factor for both tables (see `encode`).

    Returns:
      The JPEG file, a scalar tf.string.

    Raises:
      ValueError: as `encode` (at trace time).
    """
    settings = _settings(
        luma_qtable, chroma_qtable, subsampling, encoder, True, tables, scale
    )

    def encode_numpy(image: np.ndarray) -> bytes:
        return _write(image, settings, optimize=True)

    jpeg_bytes = tf.numpy_function(
        encode_numpy,
        [tf.convert_to_tensor(image_uint8, tf.uint8)],
        tf.string,
        stateful=False,
    )
    return tf.ensure_shape(jpeg_bytes, [])


def _settings(
    luma_qtable: Any,
    chroma_qtable: Any,
    subsampling: str | None,
    encoder: str | None,
    optimize: bool,
    tableset: str | tables.TableSet | None,
    scale: int | None,
) -> tables.TableSet:
    """The checked tables, subsampling and encoder of one call (all set)."""
    if tableset is None:
        if luma_qtable is None or chroma_qtable is None:
            raise ValueError("give luma_qtable and chroma_qtable, or tables=")
        tableset = tables.TableSet(luma_qtable, chroma_qtable)
    elif luma_qtable is not None or chroma_qtable is not None:
        raise ValueError(
            "give luma_qtable and chroma_qtable or tables=, not both"
        )
    elif not isinstance(tableset, tables.TableSet):
        tableset = tables.load_tableset(tableset)
    subsampling = _setting(
        "subsampling", subsampling, tableset.subsampling, DEFAULT_SUBSAMPLING
    )
    encoder = _setting("encoder", encoder, tableset.encoder, DEFAULT_ENCODER)
    check_subsampling(subsampling)
    check_encoder(encoder)
    if encoder != "libjpeg" and not optimize:
        raise ValueError(f"optimize=False is for libjpeg only, not {encoder}")
    luma, chroma = tableset.luma, tableset.chroma
    if scale is not None:
        quality = checks.integer("scale", scale, 1, 100)
        luma = tables.scale_qtable(luma, quality)
        chroma = tables.scale_qtable(chroma, quality)
    return tables.TableSet(luma, chroma, subsampling, encoder)


def _setting(
    key: str, asked: str | None, fixed: str | None, default: str
) -> str:
    if asked is None:
        return default if fixed is None else fixed
    if fixed is not None and asked != fixed:
        raise ValueError(
            f"the table set fixes {key} {fixed!r}, got {key}={asked!r}"
        )
    return asked


def _write(
    image_uint8: Any, settings: tables.TableSet, optimize: bool
) -> bytes:
    """Writes one file with checked settings, then checks its tables."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"expected [H, W, 3] uint8, got {image.shape} {image.dtype}"
        )
    height, width = image.shape[:2]
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        # Checked here: the encoders would print to stderr and fail with
        # an OSError naming a temporary file.
        raise ValueError(
            f"cannot write a {height}x{width} image as JPEG: each side "
            f"must be 1..{MAX_SIDE} pixels"
        )
    if settings.encoder == "mozjpeg":
        jpeg_bytes = _write_mozjpeg(image, settings)
    else:
        jpeg_bytes = _write_libjpeg(image, settings, optimize)
    written = read_qtables(jpeg_bytes)
    if (
        set(written) != {0, 1}
        or not np.array_equal(written[0], settings.luma)
        or not np.array_equal(written[1], settings.chroma)
    ):
        raise RuntimeError(
            "the JPEG file's quantization tables differ from the requested "
            f"ones: wrote {written}"
        )
    return jpeg_bytes


def _write_libjpeg(
    image: np.ndarray, settings: tables.TableSet, optimize: bool
) -> bytes:
    try:
        return _save_with_pillow(image, settings, optimize)
    except OSError:
        if not optimize:
            raise
    # The file did not fit Pillow's buffer (see `_RETRY_BYTES_PER_PIXEL`).
    # Pillow sizes it from the module-wide `ImageFile.MAXBLOCK` as a save
    # starts; a larger one changes no byte of the file. Raised under a lock
    # so that two retries never undo each other's; other saves meanwhile
    # only get a larger buffer.
    error = None
    for per_pixel in _RETRY_BYTES_PER_PIXEL:
        with _PILLOW_BUFFER_LOCK:
            default = ImageFile.MAXBLOCK
            ImageFile.MAXBLOCK = max(default, per_pixel * image[..., 0].size)
            try:
                return _save_with_pillow(image, settings, optimize)
            except OSError as e:
                error = e
            finally:
                ImageFile.MAXBLOCK = default
    raise error


def _save_with_pillow(
    image: np.ndarray, settings: tables.TableSet, optimize: bool
) -> bytes:
    # Pillow's `qtables=` without `quality=`: libjpeg stores them unscaled.
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(
        buffer,
        "JPEG",
        qtables=[
            settings.luma.ravel().tolist(),
            settings.chroma.ravel().tolist(),
        ],
        subsampling=settings.subsampling,
        optimize=optimize,
    )
    return buffer.getvalue()


def _write_mozjpeg(image: np.ndarray, settings: tables.TableSet) -> bytes:
    _load_mozjpeg()
    jpeg = jpeglib.from_spatial(np.ascontiguousarray(image))
    jpeg.samp_factor = np.array(_MOZJPEG_SAMPLING[settings.subsampling])
    qt = np.stack([settings.luma, settings.chroma]).astype(np.uint16)
    # One file per call: parallel calls (tf.data threads) never share one.
    fd, path = tempfile.mkstemp(suffix=".jpg", dir=_TEMP_DIR)
    os.close(fd)
    try:
        # One write at a time: jpeglib's C wrapper is not documented as
        # thread-safe, and a parallel evaluation that wrote from several
        # tf.data threads at once crashed (SIGSEGV) once. The Pillow path
        # stays parallel.
        with _MOZJPEG_LOCK:
            jpeg.write_spatial(path, qt=qt)
        with open(path, "rb") as f:
            jpeg_bytes = f.read()
    finally:
        os.remove(path)
    if markers.frame_marker(jpeg_bytes) != _SOF_PROGRESSIVE:
        # Not mozjpeg's defaults: other code loaded another library.
        raise RuntimeError(
            f"jpeglib wrote a non-progressive file: its library is "
            f"{jpeglib.version.get()!r}, not {_MOZJPEG_LIBRARY!r} (jpeglib "
            "loads one library per process; do not switch it while encoding)"
        )
    return jpeg_bytes


def _load_mozjpeg() -> None:
    # jpeglib binds one library for the whole process; switching it while
    # another thread writes would change that thread's encoder. So it is
    # switched under a lock, and only while it is not mozjpeg yet.
    if jpeglib.version.get() != _MOZJPEG_LIBRARY:
        with _MOZJPEG_LOCK:
            if jpeglib.version.get() != _MOZJPEG_LIBRARY:
                jpeglib.version.set(_MOZJPEG_LIBRARY)
