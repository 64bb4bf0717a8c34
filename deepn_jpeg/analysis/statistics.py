"""Frequency component analysis (FCA) of DeepN-JPEG, Sec. 3.2.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

The per-band standard deviation of the 8x8 block DCT coefficients of a set of
training images, for luma (Y) and chroma (Cb and Cr pooled), as JPEG's
encoder would see them:

1. decode to RGB (`compression_helps.candidates.decode_image`: JPEG with
   `dct_method="INTEGER_ACCURATE"`, as Pillow);
2. JFIF YCbCr, full range (ITU-R BT.601 coefficients, as libjpeg's
   `jccolor.c`), minus 128 (JPEG's level shift), in float64; unlike libjpeg
   the samples are not rounded to integers;
3. each plane cropped at the top-left corner to a multiple of 8 in both
   dimensions (the partial blocks at the right and bottom edges, which
   libjpeg pads by replicating edge pixels, are dropped);
4. orthonormal 8x8 DCT-II along rows, then columns (`tf.signal.dct`,
   `norm="ortho"`: the same scale as JPEG's FDCT), coefficient `[u, v]` with
   `u` the vertical and `v` the horizontal frequency (natural order, as
   quantization tables).

Statistics are running sums (block count, sum and sum of squares per band in
float64), so a data set of any size fits in memory and partial results from
shards merge exactly (`BandStatistics.merge`).

Not reproduced from the paper: which training images were analysed
(`deepn_jpeg.design` samples at most `per_class` images per label, seeded).
By default chroma is analysed at full resolution, as the paper describes;
`chroma_subsampling="4:2:0"` instead analyses 2x2-averaged chroma planes,
which is what a 4:2:0 encoder quantizes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from compression_helps.core import checks, files
from compression_helps.engine import candidates
from compression_helps.sources import datasets
from deepn_jpeg.jpeg import codec

__all__ = [
    "BLOCK_SIZE",
    "CHROMA_SUBSAMPLINGS",
    "COMPONENTS",
    "BandStatistics",
    "block_dct",
    "compute",
    "compute_with_indices",
    "downsample_chroma",
    "image_sums",
    "planes",
    "rgb_to_ycbcr",
]

BLOCK_SIZE = 8
# Planes in the order of `BandStatistics.counts` etc.
COMPONENTS = ("Y", "Cb", "Cr")
# The subsamplings the statistics (and the DCT model of `dct_pixels`) know:
# all of the encoders' but 4:2:2.
CHROMA_SUBSAMPLINGS = tuple(s for s in codec.SUBSAMPLINGS if s != "4:2:2")
_JSON_FORMAT = "deepn_jpeg.BandStatistics/1"
# JFIF (ITU-T T.871) RGB -> YCbCr rows, the coefficients of libjpeg.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ]
)
_LEVEL_SHIFT = 128.0
# Which components each name of `BandStatistics.mean` etc. pools.
_POOLS = {"luma": (0,), "chroma": (1, 2), "y": (0,), "cb": (1,), "cr": (2,)}
_ARRAYS = ("num_images", "counts", "sums", "sums_sq", "chroma_subsampling")


@dataclasses.dataclass(frozen=True, eq=False)
class BandStatistics:
    """Running sums of 8x8 block DCT coefficients, per band and component.

    Attributes:
      num_images: images analysed.
      counts: `[3]` int64, blocks per component (Y, Cb, Cr).
      sums: `[3, 8, 8]` float64, sum of each band's coefficients.
      sums_sq: `[3, 8, 8]` float64, sum of their squares.
      chroma_subsampling: "4:4:4" (full-resolution chroma) or "4:2:0".
    """

    num_images: int
    counts: np.ndarray
    sums: np.ndarray
    sums_sq: np.ndarray
    chroma_subsampling: str = "4:4:4"

    def __post_init__(self):
        """Normalises dtypes and checks shapes."""
        object.__setattr__(self, "counts", np.asarray(self.counts, np.int64))
        object.__setattr__(self, "sums", np.asarray(self.sums, np.float64))
        object.__setattr__(
            self, "sums_sq", np.asarray(self.sums_sq, np.float64)
        )
        shape = (len(COMPONENTS), BLOCK_SIZE, BLOCK_SIZE)
        if (
            self.counts.shape != shape[:1]
            or self.sums.shape != shape
            or self.sums_sq.shape != shape
        ):
            raise ValueError(
                f"expected counts [3] and sums [3, 8, 8], got "
                f"{self.counts.shape}, {self.sums.shape}, "
                f"{self.sums_sq.shape}"
            )
        _check_subsampling(self.chroma_subsampling)

    @classmethod
    def empty(cls, chroma_subsampling: str = "4:4:4") -> BandStatistics:
        """Statistics of no images (the identity of `merge`).

        Args:
          chroma_subsampling: "4:4:4" or "4:2:0".

        Returns:
          All-zero statistics.
        """
        shape = (len(COMPONENTS), BLOCK_SIZE, BLOCK_SIZE)
        zeros = [np.zeros(shape[:1]), np.zeros(shape), np.zeros(shape)]
        return cls(0, *zeros, chroma_subsampling)

    def merge(self, other: BandStatistics) -> BandStatistics:
        """Statistics of the union of both image sets.

        Args:
          other: statistics of other images, same chroma subsampling.

        Returns:
          The combined statistics (sums add).

        Raises:
          ValueError: the chroma subsamplings differ.
        """
        if other.chroma_subsampling != self.chroma_subsampling:
            raise ValueError(
                "cannot merge statistics with chroma subsampling "
                f"{self.chroma_subsampling} and {other.chroma_subsampling}"
            )
        return BandStatistics(
            self.num_images + other.num_images,
            self.counts + other.counts,
            self.sums + other.sums,
            self.sums_sq + other.sums_sq,
            self.chroma_subsampling,
        )

    def _pooled(self, component: str) -> tuple[int, np.ndarray, np.ndarray]:
        pooled = planes(component)
        count = int(self.counts[pooled].sum())
        if count == 0:
            raise ValueError(f"no {component} blocks were analysed")
        sums, sums_sq = self.sums[pooled], self.sums_sq[pooled]
        return count, sums.sum(axis=0), sums_sq.sum(axis=0)

    def count(self, component: str = "luma") -> int:
        """Number of 8x8 blocks of a component.

        Args:
          component: "luma" (= "y"), "chroma" (Cb and Cr pooled), "cb", "cr".

        Returns:
          The block count (for "chroma", Cb blocks plus Cr blocks).

        Raises:
          ValueError: unknown component.
        """
        return int(self.counts[planes(component)].sum())

    def mean(self, component: str = "luma") -> np.ndarray:
        """Mean of each band's DCT coefficients.

        Args:
          component: "luma" (= "y"), "chroma" (Cb and Cr pooled), "cb", "cr".

        Returns:
          `[8, 8]` float64, natural order.

        Raises:
          ValueError: unknown component, or no blocks.
        """
        count, sums, _ = self._pooled(component)
        return sums / count

    def std(self, component: str = "luma") -> np.ndarray:
        """Standard deviation (population, ddof=0) of each band, Sec. 3.2.

        This is the delta that the PLM (`deepn_jpeg.tables.plm`) maps to a
        quantization step.

        Args:
          component: "luma" (= "y"), "chroma" (Cb and Cr pooled), "cb", "cr".

        Returns:
          `[8, 8]` float64, natural order.

        Raises:
          ValueError: unknown component, or no blocks.
        """
        count, sums, sums_sq = self._pooled(component)
        mean = sums / count
        # float64 sums: cancellation is far below the 1e-4 we need.
        return np.sqrt(np.maximum(sums_sq / count - mean**2, 0.0))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The sums as arrays, for `rundir.write_npz` (shard files).

        Returns:
          `num_images` (int64 scalar), `counts`, `sums`, `sums_sq` and
          `chroma_subsampling` (str scalar).
        """
        return {
            "num_images": np.array(self.num_images, np.int64),
            "counts": self.counts,
            "sums": self.sums,
            "sums_sq": self.sums_sq,
            "chroma_subsampling": np.array(self.chroma_subsampling),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> BandStatistics:
        """Inverse of `to_arrays`; other arrays are ignored.

        Args:
          arrays: what `to_arrays` returned, e.g. read back from a shard.

        Returns:
          The statistics.

        Raises:
          ValueError: an array is missing or has the wrong shape.
        """
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"not band statistics: no {', '.join(missing)}")
        return cls(
            int(arrays["num_images"]),
            arrays["counts"],
            arrays["sums"],
            arrays["sums_sq"],
            str(arrays["chroma_subsampling"]),
        )

    def to_json(self) -> str:
        """The sums and a readable summary (count, mean, std) as JSON.

        Returns:
          A JSON document that `load` reads back exactly.
        """
        summary = {}
        for name in ("luma", "chroma"):
            if self.count(name):
                summary[name] = {
                    "count": self.count(name),
                    "mean": self.mean(name).tolist(),
                    "std": self.std(name).tolist(),
                }
        arrays = {k: v.tolist() for k, v in self.to_arrays().items()}
        return json.dumps(
            {
                "format": _JSON_FORMAT,
                **arrays,
                "components": list(COMPONENTS),
                "summary": summary,
            },
            indent=1,
        )

    def save(self, path: str) -> None:
        """Writes `to_json()` to `path`, atomically (`rundir.write_text`).

        Args:
          path: output file.
        """
        files.write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> BandStatistics:
        """Reads a file written by `save` (the `summary` is not read).

        Args:
          path: the JSON file.

        Returns:
          The statistics.

        Raises:
          ValueError: not a BandStatistics document.
        """
        data = files.read_json(path)
        if not isinstance(data, dict) or data.get("format") != _JSON_FORMAT:
            raise ValueError(f"{path}: not a {_JSON_FORMAT} document")
        return cls.from_arrays({k: np.array(data[k]) for k in _ARRAYS})


def planes(component: str) -> list[int]:
    """The planes (0: Y, 1: Cb, 2: Cr) a component name pools.

    Raises:
      ValueError: an unknown name (luma, chroma, y, cb, cr).
    """
    try:
        return list(_POOLS[component.lower()])
    except KeyError:
        raise ValueError(
            f"component must be one of {sorted(_POOLS)}, got {component!r}"
        ) from None


def _check_subsampling(chroma_subsampling: str) -> None:
    checks.one_of("chroma_subsampling", chroma_subsampling, CHROMA_SUBSAMPLINGS)


def rgb_to_ycbcr(image_uint8: tf.Tensor) -> tf.Tensor:
    """JFIF RGB -> YCbCr (full range), level-shifted by -128.

    Args:
      image_uint8: `[H, W, 3]` uint8 RGB.

    Returns:
      `[H, W, 3]` float64 Y-128, Cb-128, Cr-128 (not rounded).
    """
    rgb = tf.cast(image_uint8, tf.float64)
    ycbcr = tf.tensordot(rgb, tf.constant(_RGB_TO_YCBCR.T), axes=1)
    # Cb and Cr carry JFIF's +128 offset, Y does not: after the level shift
    # Y is offset by -128 and the chroma planes are centred on 0.
    return ycbcr - tf.constant([_LEVEL_SHIFT, 0.0, 0.0], tf.float64)


def block_dct(plane: tf.Tensor) -> tf.Tensor:
    """8x8 block DCT-II (orthonormal, JPEG's FDCT scale) of one plane.

    Args:
      plane: `[H, W]` float, level-shifted samples.

    Returns:
      `[N, 8, 8]` coefficients of the N = (H // 8) * (W // 8) whole blocks in
      raster order (the plane is cropped at the top-left corner to a multiple
      of 8), `[u, v]` = (vertical, horizontal) frequency.
    """
    height = tf.shape(plane)[0] // BLOCK_SIZE
    width = tf.shape(plane)[1] // BLOCK_SIZE
    plane = plane[: height * BLOCK_SIZE, : width * BLOCK_SIZE]
    blocks = tf.reshape(plane, [height, BLOCK_SIZE, width, BLOCK_SIZE])
    blocks = tf.reshape(
        tf.transpose(blocks, [0, 2, 1, 3]), [-1, BLOCK_SIZE, BLOCK_SIZE]
    )  # [N, 8 rows, 8 columns]
    # TF's RFFT fails on an empty batch (images smaller than a block): add
    # one zero block, removed below.
    blocks = tf.pad(blocks, [[0, 1], [0, 0], [0, 0]])
    # Along each row (last axis), then along each column.
    coefficients = tf.signal.dct(blocks, type=2, norm="ortho")
    coefficients = tf.signal.dct(
        tf.linalg.matrix_transpose(coefficients), type=2, norm="ortho"
    )
    return tf.linalg.matrix_transpose(coefficients)[:-1]


def downsample_chroma(chroma: tf.Tensor) -> tf.Tensor:
    """4:2:0 chroma: the mean of each 2x2 block of pixels.

    Args:
      chroma: `[H, W, C]` float planes (Cb, Cr); an odd last row or column
        is dropped (the image cropped to even size).

    Returns:
      `[H // 2, W // 2, C]`, in `chroma`'s dtype.
    """
    # "VALID" windows: an odd last row or column is in none.
    return tf.nn.avg_pool2d(chroma[None], 2, 2, "VALID")[0]


def image_sums(
    image_uint8: tf.Tensor, chroma_subsampling: str = "4:4:4"
) -> dict[str, tf.Tensor]:
    """The running-sum terms of one image (FCA, Sec. 3.2).

    Args:
      image_uint8: `[H, W, 3]` uint8 RGB.
      chroma_subsampling: "4:4:4", or "4:2:0" to average Cb and Cr over 2x2
        pixels (of the image cropped to even size) before blocking.

    Returns:
      `{"num_images": int64 1, "counts": [3] int64, "sums": [3, 8, 8]
      float64, "sums_sq": [3, 8, 8] float64}` for Y, Cb, Cr.
    """
    _check_subsampling(chroma_subsampling)
    ycbcr = rgb_to_ycbcr(image_uint8)  # [H, W, 3] float64
    planes = [ycbcr[..., 0], ycbcr[..., 1], ycbcr[..., 2]]
    if chroma_subsampling == "4:2:0":
        chroma = downsample_chroma(ycbcr[..., 1:])
        planes[1:] = [chroma[..., 0], chroma[..., 1]]
    counts, sums, sums_sq = [], [], []
    for plane in planes:
        coefficients = block_dct(plane)  # [N, 8, 8] float64
        counts.append(tf.shape(coefficients, out_type=tf.int64)[0])
        sums.append(tf.reduce_sum(coefficients, axis=0))
        sums_sq.append(tf.reduce_sum(tf.square(coefficients), axis=0))
    return {
        "num_images": tf.constant(1, tf.int64),
        "counts": tf.stack(counts),
        "sums": tf.stack(sums),
        "sums_sq": tf.stack(sums_sq),
    }


def compute_with_indices(
    dataset: tf.data.Dataset,
    chroma_subsampling: str = "4:4:4",
    ignore_errors: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[BandStatistics, np.ndarray]:
    """FCA of DeepN-JPEG, Sec. 3.2: DCT band statistics of a data set.

    One streaming pass: decode, YCbCr, 8x8 block DCT and per-image sums in
    a parallel (order-keeping) tf.data `map`, summed here in float64 in
    example order, so the same images always give the same bits.

    Args:
      dataset: dicts with "image_bytes" (scalar tf.string, an encoded image
        file) and optionally "index" (int64) and "error" (tf.string; those
        with one are left out, undecoded), as `compression_helps.datasets`
        yields.
      chroma_subsampling: "4:4:4" (the paper) or "4:2:0".
      ignore_errors: skip images that fail to decode instead of raising
        (`num_images` then counts only the analysed ones).
      progress: called with 1 after each analysed image.

    Returns:
      The statistics, and `[K]` int64 the "index" of each analysed example
      (-1 for examples without one), in dataset order.
    """
    _check_subsampling(chroma_subsampling)

    def per_image(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        image = candidates.decode_image(example["image_bytes"])
        sums = image_sums(image, chroma_subsampling)
        index = example.get("index", tf.constant(-1, tf.int64))
        return {**sums, "index": tf.cast(index, tf.int64)}

    # Never decode what the source's guard refused; labels do not matter.
    usable = functools.partial(datasets.usable, require_label=False)
    sums = dataset.filter(usable).map(per_image, tf.data.AUTOTUNE)
    if ignore_errors:
        sums = sums.ignore_errors()
    totals = BandStatistics.empty(chroma_subsampling).to_arrays()
    indices = []
    for image in sums.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        indices.append(image.pop("index"))
        totals.update({k: totals[k] + v for k, v in image.items()})
        if progress is not None:
            progress(1)
    return BandStatistics.from_arrays(totals), np.array(indices, np.int64)


def compute(
    dataset: tf.data.Dataset,
    chroma_subsampling: str = "4:4:4",
    ignore_errors: bool = False,
) -> BandStatistics:
    """FCA, Sec. 3.2: `compute_with_indices` without the indices."""
    return compute_with_indices(dataset, chroma_subsampling, ignore_errors)[0]
