"""The guard in front of every decode: only sane image files get through.

A folder unpacked from an archive can hold a FIFO (reading it blocks for
ever), a link to `/dev/zero` (reading it never ends), a multi-gigabyte file,
or a 700-byte JPEG whose header claims 13000 x 13000 pixels (decoding it
takes gigabytes). Every source checks each file here before reading or
decoding it; a file that fails is skipped with a one-line reason, like any
undecodable image, and the run goes on.

The pixel limit is read from the image header by Pillow, which parses only
the header when it opens a file (JPEG SOF, PNG IHDR, GIF, BMP, WebP). Its
default is Pillow's own `MAX_IMAGE_PIXELS` (about 89 megapixels).

A SavedModel cannot carry Python (`tf.numpy_function`), so its
`serve_bytes` endpoint reads the same header fields with TF ops
(`tf_header_problem`), giving the same reasons as `bytes_problem`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "Limits",
    "bytes_problem",
    "file_problem",
    "read_checked",
    "tf_bytes_problem",
    "tf_header_problem",
    "tf_read_checked",
]

MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit.
MAX_FILE_BYTES = 256 << 20  # ImageNet's largest file is about 15 MB.


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a file may be.

    Attributes:
      max_pixels: most pixels (width x height) an image may claim.
      max_file_bytes: largest encoded file.
    """

    max_pixels: int = MAX_PIXELS
    max_file_bytes: int = MAX_FILE_BYTES

    def __post_init__(self):
        """Checks the limits are positive."""
        if self.max_pixels < 1 or self.max_file_bytes < 1:
            raise ValueError(
                "max_pixels and max_file_bytes must be >= 1, got "
                f"{self.max_pixels} and {self.max_file_bytes}"
            )


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def _kind_problem(info: os.stat_result, path: str, limits: Limits) -> str:
    """`file_problem` of a file's `os.stat` result ("" if fine)."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for test, k in _KINDS if test(info.st_mode)), None)
        via = " (through a symbolic link)" if os.path.islink(path) else ""
        return f"not a regular file: {kind or 'a special file'}{via}"
    if info.st_size > limits.max_file_bytes:
        return f"file too large: {info.st_size} bytes > {limits.max_file_bytes}"
    return ""


def file_problem(path: str | bytes, limits: Limits = Limits()) -> str | None:
    """Why a path must not be read, or None.

    Args:
      path: the file (a symbolic link is followed and its target checked);
        bytes for a name that is not valid UTF-8.
      limits: the size limit.

    Returns:
      A one-line reason (`<kind>: <detail>`), or None for a regular file
      within the limit.
    """
    try:
        info = os.stat(path)  # Follows links: the target is what is read.
    except OSError as e:
        return f"unreadable file: {e.strerror}"
    return _kind_problem(info, path, limits) or None


def bytes_problem(image_bytes: bytes, limits: Limits = Limits()) -> str | None:
    """Why encoded bytes must not be decoded, or None.

    Args:
      image_bytes: an encoded image file.
      limits: the size and pixel limits.

    Returns:
      A one-line reason, or None. Files Pillow cannot parse pass: the
      decoder then records why it cannot decode them.
    """
    if len(image_bytes) > limits.max_file_bytes:
        return (
            f"file too large: {len(image_bytes)} bytes > "
            f"{limits.max_file_bytes}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image_bytes)) as image:
                width, height = image.size  # Header only: nothing decoded.
        size, pixels = f"{width}x{height} = ", width * height
    except Image.DecompressionBombError as e:
        # Over twice Pillow's own limit: Pillow refuses to open it and says
        # only the pixel count, which may still be within a raised limit.
        size, pixels = "", _pixels_in(str(e))
    except Exception:  # Not an image Pillow knows: left to the decoder.
        return None
    if pixels > limits.max_pixels:
        return (
            f"too many pixels: {size}{pixels / 1e6:.1f} MP > "
            f"{limits.max_pixels / 1e6:.1f} MP limit (raise --max_pixels)"
        )
    return None


def _pixels_in(message: str) -> int:
    """The pixel count in Pillow's DecompressionBombError message."""
    match = re.search(r"\((\d+) pixels\)", message)
    # Pillow raises only beyond twice its limit: at least that many.
    return int(match.group(1)) if match else 2 * Image.MAX_IMAGE_PIXELS + 1


def read_checked(
    path: str | bytes, limits: Limits = Limits()
) -> tuple[bytes, str]:
    """Reads a file that passes `file_problem` and `bytes_problem`.

    Args:
      path: the file; bytes for a name that is not valid UTF-8.
      limits: the limits.

    Returns:
      `(bytes, "")`, or `(b"", reason)` for a file that must be skipped.
    """
    problem = file_problem(path, limits)
    if problem:
        return b"", problem
    try:
        # Non-blocking, and checked again on the open file: a name swapped
        # for a FIFO after `file_problem` must not block the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return b"", f"unreadable file: {e.strerror}"
    with os.fdopen(fd, "rb") as f:
        problem = _kind_problem(os.fstat(fd), path, limits)
        if problem:
            return b"", problem
        try:
            # One byte more than allowed: a file that grew is caught too.
            image_bytes = f.read(limits.max_file_bytes + 1)
        except OSError as e:
            return b"", f"unreadable file: {e.strerror}"
    problem = bytes_problem(image_bytes, limits)
    # No bytes with a reason: nothing downstream can decode a bomb.
    return (b"", problem) if problem else (image_bytes, "")


def tf_read_checked(
    path: tf.Tensor, limits: Limits = Limits()
) -> tuple[tf.Tensor, tf.Tensor]:
    """`read_checked` in a tf.data pipeline.

    Args:
      path: scalar tf.string file path (bytes, any encoding).
      limits: the limits.

    Returns:
      `(image_bytes, error)`: scalar tf.strings; error "" when fine.
    """

    def read(path_bytes) -> tuple[bytes, bytes]:
        # Bytes as they are: a name that is not UTF-8 opens all the same.
        image_bytes, error = read_checked(np.asarray(path_bytes).item(), limits)
        return image_bytes, error.encode()

    image_bytes, error = tf.numpy_function(
        read, [path], [tf.string, tf.string], stateful=False
    )
    return tf.ensure_shape(image_bytes, []), tf.ensure_shape(error, [])


def tf_bytes_problem(
    image_bytes: tf.Tensor, limits: Limits = Limits()
) -> tf.Tensor:
    """`bytes_problem` in a tf.data pipeline: scalar tf.string, "" if fine."""

    def check(data) -> bytes:
        return (bytes_problem(np.asarray(data).item(), limits) or "").encode()

    error = tf.numpy_function(check, [image_bytes], tf.string, stateful=False)
    return tf.ensure_shape(error, [])


_HEAD_BYTES = 32  # Every header field read below lies in the first 30.


def _unsigned(head: tf.Tensor, start: int, size: int, big: bool) -> tf.Tensor:
    """The unsigned integer in `head[start:start + size]`, int64."""
    digits = head[start : start + size]
    if big:
        digits = digits[::-1]
    return tf.reduce_sum(digits * (256 ** tf.range(size, dtype=tf.int64)))


def _header_size(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Width and height an image file's header claims, from TF ops only.

    The formats `candidates.decode_image` decodes, read where TF's decoders
    read them before allocating the image: JPEG (SOF, via
    `tf.image.extract_jpeg_shape`, which fails on a broken header), PNG
    (IHDR), GIF (logical screen), BMP (`|height|`, as TF) and WebP (VP8,
    VP8L, VP8X). Other files: 0 x 0 (their decoding fails).

    Args:
      image_bytes: scalar tf.string.

    Returns:
      `(width, height)`, scalar int64 each.
    """
    # Zero-padded to a fixed length: a short file reads zeros, not errors.
    head = tf.strings.substr(image_bytes, 0, _HEAD_BYTES)  # Never fails.
    head += tf.strings.substr(
        b"\0" * _HEAD_BYTES, 0, _HEAD_BYTES - tf.strings.length(head)
    )
    b = tf.io.decode_raw(head, tf.uint8)
    b = tf.cast(tf.ensure_shape(b, [_HEAD_BYTES]), tf.int64)  # [32]

    def starts_with(signature: bytes, at: int = 0) -> tf.Tensor:
        return tf.equal(tf.strings.substr(head, at, len(signature)), signature)

    def le(start: int, size: int) -> tf.Tensor:
        return _unsigned(b, start, size, big=False)

    def int32(value: tf.Tensor) -> tf.Tensor:  # Two's complement, |value|.
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    webp = tf.logical_and(starts_with(b"RIFF"), starts_with(b"WEBP", 8))
    # VP8L packs width - 1 and height - 1 in 14 bits each from byte 21.
    vp8l_width = 1 + b[21] + (b[22] % 64) * 256
    vp8l_height = 1 + b[22] // 64 + b[23] * 4 + (b[24] % 16) * 1024
    # (format test, width, height); the signatures exclude each other.
    sizes = [
        (
            starts_with(b"\x89PNG\r\n\x1a\n"),
            _unsigned(b, 16, 4, big=True),
            _unsigned(b, 20, 4, big=True),
        ),
        (starts_with(b"GIF8"), le(6, 2), le(8, 2)),
        (starts_with(b"BM"), int32(le(18, 4)), int32(le(22, 4))),
        (webp & starts_with(b"VP8 ", 12), le(26, 2) % 2**14, le(28, 2) % 2**14),
        (webp & starts_with(b"VP8L", 12), vp8l_width, vp8l_height),
        (webp & starts_with(b"VP8X", 12), 1 + le(24, 3), 1 + le(27, 3)),
    ]
    width = height = tf.constant(0, tf.int64)
    for test, w, h in reversed(sizes):
        width, height = tf.where(test, w, width), tf.where(test, h, height)

    def jpeg_size() -> tuple[tf.Tensor, tf.Tensor]:
        shape = tf.image.extract_jpeg_shape(image_bytes, output_type=tf.int64)
        return shape[1], shape[0]

    return tf.cond(
        tf.io.is_jpeg(image_bytes), jpeg_size, lambda: (width, height)
    )


def tf_header_problem(
    image_bytes: tf.Tensor, limits: Limits = Limits()
) -> tf.Tensor:
    """`bytes_problem` from TF ops only, so a SavedModel can hold it.

    Args:
      image_bytes: scalar tf.string, an encoded image file.
      limits: the size and pixel limits.

    Returns:
      Scalar tf.string: "" if fine, else a one-line reason worded as
      `bytes_problem`'s. Fails (an op error) on a JPEG whose header
      is broken.
    """
    size = tf.cast(tf.strings.length(image_bytes), tf.int64)

    def pixels_problem() -> tf.Tensor:
        width, height = _header_size(image_bytes)
        # In float64: two 32-bit PNG sides overflow an int64 product.
        pixels = tf.cast(width, tf.float64) * tf.cast(height, tf.float64)
        megapixels = pixels / 1e6
        return tf.where(
            pixels > limits.max_pixels,
            tf.strings.join(
                [
                    "too many pixels: ",
                    tf.strings.as_string(width),
                    "x",
                    tf.strings.as_string(height),
                    " = ",
                    tf.strings.as_string(megapixels, precision=1),
                    f" MP > {limits.max_pixels / 1e6:.1f} MP limit",
                ]
            ),
            "",
        )

    return tf.cond(
        size > limits.max_file_bytes,
        lambda: tf.strings.join(
            [
                "file too large: ",
                tf.strings.as_string(size),
                f" bytes > {limits.max_file_bytes}",
            ]
        ),
        pixels_problem,
    )
