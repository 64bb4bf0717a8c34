"""JPEG marker segments read from a file's bytes (ITU-T T.81, Annex B).

What a written file holds, read without Pillow, so that a check does not
depend on how a library reports it: the quantization tables of its DQT
segments and its start-of-frame marker (`guard.JPEG_SOF`, the project's
one list of them).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from compression_helps.sources import guard

__all__ = ["ZIGZAG", "frame_marker", "read_qtables"]


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


def frame_marker(jpeg_bytes: bytes) -> int | None:
    """The file's start-of-frame marker (0xC0 baseline, 0xC2 progressive)."""
    for marker, _ in _header_segments(jpeg_bytes):
        if marker in guard.JPEG_SOF:
            return marker
    return None
