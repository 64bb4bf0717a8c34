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
from collections.abc import Iterator
from typing import Any

import jpeglib
import numpy as np
import tensorflow as tf
from PIL import Image

from compression_helps.core import checks
from deepn_jpeg.jpeg import tables

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_SUBSAMPLING",
    "ENCODERS",
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
# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOF_PROGRESSIVE = 0xC2  # What mozjpeg writes with its defaults.
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
    found: dict[int, np.ndarray] = {}
    for marker, segment in _header_segments(jpeg_bytes):
        if marker == _DQT:
            found.update(_parse_dqt(segment))
    return found


def _header_segments(jpeg_bytes: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) of each segment, up to the first scan's header."""
    data = bytes(jpeg_bytes)
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
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
        yield marker, segment
        if marker == _SOS:  # Entropy-coded data follows.
            break
        pos += 2 + length


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


def _frame_marker(jpeg_bytes: bytes) -> int | None:
    """The file's start-of-frame marker (0xC0 baseline, 0xC2 progressive)."""
    for marker, _ in _header_segments(jpeg_bytes):
        if marker in _SOF:
            return marker
    return None


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
    if _frame_marker(jpeg_bytes) != _SOF_PROGRESSIVE:
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
