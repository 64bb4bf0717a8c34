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
"""

from __future__ import annotations

import dataclasses
import io
import os
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


def file_problem(path: str, limits: Limits = Limits()) -> str | None:
    """Why a path must not be read, or None.

    Args:
      path: the file (a symbolic link is followed and its target checked).
      limits: the size limit.

    Returns:
      A one-line reason (`<kind>: <detail>`), or None for a regular file
      within the limit.
    """
    try:
        info = os.stat(path)  # Follows links: the target is what is read.
    except OSError as e:
        return f"unreadable file: {e.strerror}"
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for test, k in _KINDS if test(info.st_mode)), None)
        via = " (through a symbolic link)" if os.path.islink(path) else ""
        return f"not a regular file: {kind or 'a special file'}{via}"
    if info.st_size > limits.max_file_bytes:
        return f"file too large: {info.st_size} bytes > {limits.max_file_bytes}"
    return None


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
    except Image.DecompressionBombError:
        # Over twice Pillow's limit; Pillow refuses to say the size.
        width = height = None
    except Exception:  # Not an image Pillow knows: left to the decoder.
        return None
    if width is None or width * height > limits.max_pixels:
        size = "" if width is None else f" {width}x{height} ="
        pixels = "" if width is None else f" {width * height / 1e6:.1f} MP"
        return (
            f"too many pixels:{size}{pixels or ' more than'} > "
            f"{limits.max_pixels / 1e6:.1f} MP limit (raise --max_pixels)"
        )
    return None


def read_checked(path: str, limits: Limits = Limits()) -> tuple[bytes, str]:
    """Reads a file that passes `file_problem` and `bytes_problem`.

    Returns:
      `(bytes, "")`, or `(b"", reason)` for a file that must be skipped.
    """
    problem = file_problem(path, limits)
    if problem:
        return b"", problem
    try:
        with open(path, "rb") as f:
            # One byte more than allowed: a file that grew is caught too.
            image_bytes = f.read(limits.max_file_bytes + 1)
    except OSError as e:
        return b"", f"unreadable file: {e.strerror}"
    return image_bytes, bytes_problem(image_bytes, limits) or ""


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
        path = os.fsdecode(np.asarray(path_bytes).item())
        image_bytes, error = read_checked(path, limits)
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
