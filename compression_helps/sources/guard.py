"""The guard in front of every decode: only sane image files get through.

A folder unpacked from an archive can hold a FIFO (reading it blocks for
ever), a link to `/dev/zero` (reading it never ends), a multi-gigabyte file,
or a 700-byte JPEG whose header claims 13000 x 13000 pixels (decoding it
takes gigabytes). Every file is checked here before it is read or decoded;
a file that fails is skipped with a one-line reason, like any undecodable
image, and the run goes on.

- `file_problem`: when a folder is listed, `os.stat` of each file (a link
  is followed): regular files only, within the size limit. Nothing is
  opened, so a FIFO cannot block. (A file replaced by a FIFO after the
  listing is not caught; the data set's identity check of a resumed run
  is.)
- `tf_header_problem`: before any decode, the width and height the header
  claims (JPEG SOF, PNG IHDR, GIF, BMP, WebP), read with TF ops alone, so
  that it runs on tf.data service workers and inside a SavedModel
  (`serve_bytes`), where Python (`tf.numpy_function`) cannot. The default
  pixel limit is Pillow's own `MAX_IMAGE_PIXELS` (about 89 megapixels).
"""

from __future__ import annotations

import dataclasses
import os
import stat

import tensorflow as tf
from PIL import Image

__all__ = [
    "DEFAULT_LIMITS",
    "FLAG_HINT",
    "JPEG_SOF",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "Limits",
    "file_problem",
    "stat_problem",
    "tf_header_problem",
]

MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit.
MAX_FILE_BYTES = 256 << 20  # ImageNet's largest file is about 15 MB.
# Start-of-frame markers of every JPEG coding (not DHT C4, JPG C8, DAC CC):
# the project's one list (`codec` reads frames with it too).
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SOS = 0xDA  # Scan data follows: no frame header after it.
_JPEG_EOI = 0xD9
# The first window a marker is looked for in, and the largest.
_WINDOW_BYTES = 64
_MAX_WINDOW_BYTES = 1 << 20


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


DEFAULT_LIMITS = Limits()  # Frozen: a safe default argument.
# What the data sources add to a pixel-limit reason.
FLAG_HINT = " (raise --max_pixels)"
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def stat_problem(
    info: os.stat_result, path: str | bytes, limits: Limits
) -> str:
    """`file_problem` of a file's `os.stat` result ("" if fine).

    Args:
      info: `os.stat(path)` (links followed).
      path: the file, to say when it is a link.
      limits: the size limit.

    Returns:
      A one-line reason, or "".
    """
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for test, k in _KINDS if test(info.st_mode)), None)
        via = " (through a symbolic link)" if os.path.islink(path) else ""
        return f"not a regular file: {kind or 'a special file'}{via}"
    if info.st_size > limits.max_file_bytes:
        return f"file too large: {info.st_size} bytes > {limits.max_file_bytes}"
    return ""


def file_problem(
    path: str | bytes, limits: Limits = DEFAULT_LIMITS
) -> str | None:
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
    return stat_problem(info, path, limits) or None


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
    read them before allocating the image: JPEG (SOF, `_jpeg_size`), PNG
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

    # libjpeg needs only SOI (FF D8) where `tf.io.is_jpeg` wants FF D8 FF:
    # the wider test, so that no decoder reads a frame the guard did not.
    return tf.cond(
        starts_with(b"\xff\xd8"),
        lambda: _jpeg_size(image_bytes),
        lambda: (width, height),
    )


def _jpeg_size(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Width and height of a JPEG's frame header; 0 x 0 if there is none.

    Walks the marker segments from SOI to the first start-of-frame as
    libjpeg does before it allocates anything (`jdmarker.c`): from each
    point, `next_marker` skips any bytes but 0xFF, swallows fill 0xFF
    bytes and a stuffed 0xFF 0x00, so the next marker is the first 0xFF
    followed by a byte that is neither 0x00 nor 0xFF, however much
    garbage lies before it. A segment's length counts from its length
    field, at least 2 (`skip_variable`). Markers libjpeg refuses are
    stepped over like any segment, so the guard may see a frame that
    libjpeg would not reach, never miss one it reads. Unlike
    `tf.image.extract_jpeg_shape` it never fails: a header without a whole
    frame header reads as 0 x 0 and is left to the decoder, which records
    why it cannot decode it.
    """
    length = tf.cast(tf.strings.length(image_bytes), tf.int64)
    sof = tf.constant(sorted(JPEG_SOF), tf.int64)
    ends = tf.constant((_JPEG_SOS, _JPEG_EOI), tf.int64)  # No frame after.

    def unfinished(position, width, height, done, window):
        return tf.logical_and(tf.logical_not(done), position + 1 < length)

    def next_segment(position, width, height, done, window):
        # Garbage may run for megabytes: look for the marker in a window
        # that doubles on every miss, so the loop stays short.
        chunk = tf.io.decode_raw(
            tf.strings.substr(image_bytes, position, window), tf.uint8
        )
        chunk = tf.cast(chunk, tf.int64)  # [<= window]
        follows = chunk[1:]
        hits = tf.where(
            (chunk[:-1] == 0xFF) & (follows != 0x00) & (follows != 0xFF)
        )[:, 0]
        found = tf.size(hits) > 0
        # [FF] marker, length (2), precision, height (2), width (2).
        at = position + tf.concat([hits, tf.zeros([1], tf.int64)], 0)[0]
        b = _bytes_at(image_bytes, at + 1, 8)
        marker = b[0]
        whole = at + 9 <= length  # A frame header cut short: no size.
        is_sof = found & tf.reduce_any(tf.equal(marker, sof)) & whole
        standalone = tf.logical_or(  # RSTn, TEM and SOI have no length.
            tf.logical_and(marker >= 0xD0, marker <= 0xD8),
            tf.equal(marker, 0x01),
        )
        step = tf.where(
            standalone,
            tf.constant(0, tf.int64),
            tf.maximum(b[1] * 256 + b[2], 2),
        )
        # Past the marker (and its segment), or the window less its last
        # byte, which may be a 0xFF whose marker is in the next window.
        position = tf.where(
            found,
            at + 2 + step,
            position + tf.maximum(tf.size(chunk, tf.int64) - 1, 1),
        )
        window = tf.where(
            found,
            tf.constant(_WINDOW_BYTES, tf.int64),
            tf.minimum(2 * window, _MAX_WINDOW_BYTES),
        )
        stop = found & (
            tf.reduce_any(tf.equal(marker, sof))
            | tf.reduce_any(tf.equal(marker, ends))
        )
        width = tf.where(is_sof, b[6] * 256 + b[7], width)
        height = tf.where(is_sof, b[4] * 256 + b[5], height)
        return position, width, height, stop, window

    zero = tf.constant(0, tf.int64)
    start = (
        tf.constant(2, tf.int64),
        zero,
        zero,
        tf.constant(False),
        tf.constant(_WINDOW_BYTES, tf.int64),
    )
    _, width, height, _, _ = tf.while_loop(unfinished, next_segment, start)
    return width, height


def _bytes_at(data: tf.Tensor, position: tf.Tensor, count: int) -> tf.Tensor:
    """`data[position:position + count]` as int64, zero-padded past the end."""
    chunk = tf.strings.substr(data, position, count)
    chunk += tf.strings.substr(
        b"\0" * count, 0, count - tf.strings.length(chunk)
    )
    return tf.cast(tf.io.decode_raw(chunk, tf.uint8), tf.int64)


def tf_header_problem(
    image_bytes: tf.Tensor, limits: Limits = DEFAULT_LIMITS, hint: str = ""
) -> tf.Tensor:
    """Why encoded bytes must not be decoded, from TF ops only.

    Never fails: a header it cannot read passes, and the decoder records
    why it cannot decode the file.

    Args:
      image_bytes: scalar tf.string, an encoded image file.
      limits: the size and pixel limits.
      hint: added to a pixel-limit reason, e.g. how to raise the limit.

    Returns:
      Scalar tf.string: "" if fine, else a one-line reason (`file too
      large: ...`, `too many pixels: WxH = ... MP > ... MP limit`).
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
                    f" MP > {limits.max_pixels / 1e6:.1f} MP limit{hint}",
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
