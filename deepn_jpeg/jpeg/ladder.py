"""The ladder of codecs: the files a job classifies after the original.

One place builds the candidates of every job that compares JPEG files: the
rate-accuracy curves (`deepn_jpeg.jobs.rate_accuracy`, SPEC.md "Rate
points", "Encoders") and the rungs of `compress` (SPEC.md "Smallest file
that keeps the answer"). A ladder is a list of curves (`Curve`: which
tables, written by which encoder at which chroma subsampling), each at
every quality of a grid; `codecs` turns it into `candidates.Codec`s.

Standard tables written by libjpeg at 4:2:0 or 4:4:4 go through
`tf.io.encode_jpeg` (the evaluation's own candidates, `candidates.jpeg_codec`;
TensorFlow's libjpeg-turbo writes the same coefficients and Huffman codes
as Pillow's with Annex K's tables scaled to the QF: the same pixels and file
sizes, only the JFIF density field differs), all others through
`codec.tf_encode`, whose files carry exactly the tables asked for.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from compression_helps.engine import candidates
from deepn_jpeg.jpeg import codec, tables, tableset_files

__all__ = [
    "Curve",
    "TablesAt",
    "codecs",
    "curves",
    "scaled_tables",
    "table_codec",
]

# (tables name, quality) -> (luma, chroma) `[8, 8]` tables at that quality.
TablesAt = Callable[[str, int], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Curve:
    """One curve of a ladder: tables written one way, at every quality.

    Attributes:
      tables: `candidates.JPEG` (Annex K's tables) or a table set's name.
      encoder: one of `codec.ENCODERS`.
      subsampling: one of `codec.SUBSAMPLINGS`.
    """

    tables: str
    encoder: str = codec.DEFAULT_ENCODER
    subsampling: str = codec.DEFAULT_SUBSAMPLING

    def name(self, reference_subsampling: str) -> str:
        """The curve's name, e.g. `jpeg`, `paper@mozjpeg`, `jpeg-444`.

        The tables' name, then the subsampling where it is not the
        ladder's reference (`-444`), then the encoder where it is not
        libjpeg (`@mozjpeg`).
        """
        name = self.tables
        if self.subsampling != reference_subsampling:
            name += "-" + self.subsampling.replace(":", "")
        if self.encoder != codec.DEFAULT_ENCODER:
            name += f"{tableset_files.ENCODER_MARK}{self.encoder}"
        return name


def curves(
    tablesets: Mapping[str, tables.TableSet],
    encoders: Sequence[str],
    subsamplings: Sequence[str],
) -> list[Curve]:
    """Standard JPEG, then every table set, written every way asked for.

    Each by every encoder and subsampling (SPEC.md, "Encoders"), except
    that a table set whose file fixes its encoder or subsampling is written only
    with those: tables made for one are claimed only for it.

    Args:
      tablesets: name -> table set (`tableset_files.load_sets`).
      encoders: from `codec.ENCODERS`.
      subsamplings: from `codec.SUBSAMPLINGS`.

    Returns:
      The curves, standard JPEG's first, without repeats.
    """
    found = {}
    for name in (candidates.JPEG, *tablesets):
        tableset = tablesets.get(name)
        fixed_encoder = tableset.encoder if tableset else None
        fixed_subsampling = tableset.subsampling if tableset else None
        for encoder in (fixed_encoder,) if fixed_encoder else encoders:
            for subsampling in (
                (fixed_subsampling,) if fixed_subsampling else subsamplings
            ):
                curve = Curve(name, encoder, subsampling)
                found[curve] = None
    return list(found)


def scaled_tables(tablesets: Mapping[str, tables.TableSet]) -> TablesAt:
    """Every table set, and Annex K's tables, IJG-scaled to a quality.

    Args:
      tablesets: name -> table set (its tables are the quality-50 point).

    Returns:
      `(name, quality) -> (luma, chroma)`; `candidates.JPEG` is Annex K's.
    """

    @functools.cache
    def tables_at(name: str, quality: int) -> tuple[np.ndarray, np.ndarray]:
        if name == candidates.JPEG:
            return tables.standard_qtables(quality)
        tableset = tablesets[name]
        return (
            tables.scale_qtable(tableset.luma, quality),
            tables.scale_qtable(tableset.chroma, quality),
        )

    return tables_at


def codecs(
    ladder: Sequence[Curve],
    qualities: Sequence[int],
    tables_at: TablesAt,
    reference_subsampling: str = codec.DEFAULT_SUBSAMPLING,
) -> tuple[candidates.Codec, ...]:
    """Every curve at every quality, curve by curve: the candidates.

    Args:
      ladder: the curves (`curves`, or a job's own).
      qualities: the quality grid, 1..100 each.
      tables_at: the tables of a curve's `tables` at a quality.
      reference_subsampling: the subsampling left out of curve names.

    Returns:
      The codecs, named `qf<q>` (standard JPEG by libjpeg at the reference
      subsampling) or `<curve>_q<q>`.

    Raises:
      ValueError: bad tables, encoder or subsampling, or two candidates
        with one name.
    """
    found = [
        _rung(
            curve,
            curve.name(reference_subsampling),
            int(quality),
            tables_at(curve.tables, int(quality)),
        )
        for curve in ladder
        for quality in qualities
    ]
    return candidates.as_codecs(found)


def _rung(
    curve: Curve,
    name: str,
    quality: int,
    tables_pair: tuple[np.ndarray, np.ndarray],
) -> candidates.Codec:
    """One candidate: the curve's tables at `quality`, encoded its way."""
    if (
        curve.tables == candidates.JPEG
        and curve.encoder == codec.DEFAULT_ENCODER
        and curve.subsampling in _TF_CHROMA_DOWNSAMPLING
    ):
        encode = functools.partial(
            tf.io.encode_jpeg,
            quality=quality,
            optimize_size=True,
            chroma_downsampling=_TF_CHROMA_DOWNSAMPLING[curve.subsampling],
        )
        return candidates.Codec(name, quality, encode)
    luma, chroma = tables_pair
    return table_codec(
        name, quality, luma, chroma, curve.subsampling, curve.encoder
    )


# The subsamplings TensorFlow's encoder writes: 4:2:0 (downsampled chroma)
# and 4:4:4.
_TF_CHROMA_DOWNSAMPLING = {"4:2:0": True, "4:4:4": False}


def table_codec(
    curve: str,
    quality: int,
    luma: np.ndarray,
    chroma: np.ndarray,
    subsampling: str = codec.DEFAULT_SUBSAMPLING,
    encoder: str = codec.DEFAULT_ENCODER,
) -> candidates.Codec:
    """A candidate codec writing JPEG files with the given tables.

    Args:
      curve: the curve the candidate belongs to.
      quality: its grid quality (the tables are already scaled to it).
      luma: `[8, 8]` luma table.
      chroma: `[8, 8]` chroma table.
      subsampling: chroma subsampling, one of `codec.SUBSAMPLINGS`.
      encoder: one of `codec.ENCODERS`.

    Returns:
      The `candidates.Codec` (`codec.tf_encode`).

    Raises:
      ValueError: bad tables, subsampling or encoder (here, not at trace).
    """
    # Checked once here; the codec's images skip the checks (`tf_encode`).
    codec.check_subsampling(subsampling)
    codec.check_encoder(encoder)
    settings = tables.TableSet(luma, chroma, subsampling, encoder)

    def encode(image_uint8):
        return codec.tf_encode(image_uint8, tables=settings)

    return candidates.Codec(curve, quality, encode)
