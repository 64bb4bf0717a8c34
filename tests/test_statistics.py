import io
import json
import os

import numpy as np
import scipy.fft
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from compression_helps.core import files
from deepn_jpeg.analysis import statistics
from tests import testing_utils

# JFIF (ITU-T T.871), written out independently of the library.
_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.299 / 1.772, -0.587 / 1.772, 0.5],
        [0.5, -0.587 / 1.402, -0.114 / 1.402],
    ]
)


def reference_sums(images, chroma_subsampling="4:4:4"):
    """Plain numpy/scipy FCA: counts, sums, sums of squares for Y, Cb, Cr."""
    counts = np.zeros(3, np.int64)
    sums = np.zeros((3, 8, 8))
    sums_sq = np.zeros((3, 8, 8))
    for image in images:
        ycbcr = image.astype(np.float64) @ _YCBCR.T
        ycbcr[..., 0] -= 128.0
        planes = [ycbcr[..., c] for c in range(3)]
        if chroma_subsampling == "4:2:0":
            h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
            planes[1:] = [
                p[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
                for p in planes[1:]
            ]
        for c, plane in enumerate(planes):
            h, w = (plane.shape[0] // 8) * 8, (plane.shape[1] // 8) * 8
            blocks = plane[:h, :w].reshape(h // 8, 8, w // 8, 8)
            blocks = blocks.transpose(0, 2, 1, 3).reshape(-1, 8, 8)
            coefficients = scipy.fft.dctn(
                blocks, type=2, norm="ortho", axes=(1, 2)
            )
            counts[c] += len(blocks)
            sums[c] += coefficients.sum(axis=0)
            sums_sq[c] += (coefficients**2).sum(axis=0)
    return counts, sums, sums_sq


def reference_std(counts, sums, sums_sq, planes):
    n = counts[planes].sum()
    mean = sums[planes].sum(axis=0) / n
    return np.sqrt(sums_sq[planes].sum(axis=0) / n - mean**2)


def png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def examples_dataset(files, labels=None, with_index=False):
    labels = [-1] * len(files) if labels is None else labels
    examples = {
        "id": [f"img{i}" for i in range(len(files))],
        "image_bytes": files,
        "label": tf.constant(labels, tf.int32),
    }
    if with_index:
        examples["index"] = tf.range(len(files), dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices(examples)


def synthetic_images():
    # Odd sizes exercise the crop to a multiple of 8 (and of 2 for 4:2:0).
    sizes = [(37, 53), (32, 48), (61, 19), (8, 8)]
    return [
        testing_utils.random_image(h, w, seed=i)
        for i, (h, w) in enumerate(sizes)
    ]


class BlockDctTest(tf.test.TestCase):
    def test_matches_scipy_dctn(self):
        plane = np.random.default_rng(0).uniform(-128, 127, (19, 27))
        got = statistics.block_dct(tf.constant(plane)).numpy()
        blocks = plane[:16, :24].reshape(2, 8, 3, 8).transpose(0, 2, 1, 3)
        expected = scipy.fft.dctn(
            blocks.reshape(-1, 8, 8), type=2, norm="ortho", axes=(1, 2)
        )
        self.assertAllClose(got, expected, atol=1e-9)

    def test_row_index_is_vertical_frequency(self):
        # Horizontal stripes (vary down the rows) -> energy in column v=0.
        rows = np.cos(np.pi * (2 * np.arange(8) + 1) * 3 / 16)
        plane = np.tile(rows[:, None], (1, 8))
        got = statistics.block_dct(tf.constant(plane)).numpy()[0]
        self.assertAllClose(got[3, 0], 2.0 * np.sqrt(8.0), atol=1e-9)
        got[3, 0] = 0
        self.assertAllClose(got, np.zeros((8, 8)), atol=1e-9)

    def test_constant_block_has_only_dc_of_8_times_value(self):
        got = statistics.block_dct(tf.fill([8, 8], 10.0)).numpy()[0]
        self.assertAllClose(got[0, 0], 80.0)
        self.assertAllClose(got.ravel()[1:], np.zeros(63), atol=1e-5)

    def test_smaller_than_a_block_gives_no_blocks(self):
        got = statistics.block_dct(tf.zeros([7, 30], tf.float64))
        self.assertEqual(got.shape[0], 0)


class ColorTest(tf.test.TestCase):
    def test_gray_has_zero_chroma_and_shifted_luma(self):
        image = np.full((2, 2, 3), 200, np.uint8)
        got = statistics.rgb_to_ycbcr(image).numpy()
        self.assertAllClose(got[..., 0], np.full((2, 2), 72.0))
        self.assertAllClose(got[..., 1:], np.zeros((2, 2, 2)), atol=1e-9)

    def test_within_rounding_of_pillow_ycbcr(self):
        image = testing_utils.random_image(16, 16)
        got = statistics.rgb_to_ycbcr(image).numpy() + 128.0
        pillow = np.asarray(Image.fromarray(image).convert("YCbCr"), float)
        self.assertAllClose(got, pillow, atol=1.0)


class ImageSumsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("444", "4:4:4"), ("420", "4:2:0"))
    def test_eager_equals_dataset_map(self, subsampling):
        image = testing_utils.random_image(37, 53)
        eager = statistics.image_sums(tf.constant(image), subsampling)
        mapped = next(
            iter(
                tf.data.Dataset.from_tensors(image).map(
                    lambda x: statistics.image_sums(x, subsampling)
                )
            )
        )
        for key in eager:
            self.assertAllClose(eager[key], mapped[key], rtol=1e-12)

    def test_counts_whole_blocks(self):
        image = testing_utils.random_image(37, 53)
        sums = statistics.image_sums(image, "4:2:0")
        # 37x53 -> 4x6 luma blocks; chroma 18x26 -> 2x3 blocks.
        self.assertAllEqual(sums["counts"], [24, 6, 6])


class ComputeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("444", "4:4:4"), ("420", "4:2:0"))
    def test_matches_numpy_reference_on_synthetic_images(self, subsampling):
        images = synthetic_images()
        files = [png_bytes(image) for image in images]  # Lossless.
        stats = statistics.compute(
            examples_dataset(files), chroma_subsampling=subsampling
        )
        counts, sums, sums_sq = reference_sums(images, subsampling)
        self.assertEqual(stats.num_images, len(images))
        self.assertAllEqual(stats.counts, counts)
        self.assertAllClose(stats.sums, sums, rtol=1e-4, atol=1e-6)
        self.assertAllClose(stats.sums_sq, sums_sq, rtol=1e-4)
        for name, planes in (("luma", [0]), ("chroma", [1, 2]), ("cr", [2])):
            self.assertAllClose(
                stats.std(name),
                reference_std(counts, sums, sums_sq, planes),
                rtol=1e-4,
            )

    def test_matches_numpy_reference_on_real_images(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        paths = testing_utils.sample_paths(4)
        files = [open(p, "rb").read() for p in paths]
        stats = statistics.compute(examples_dataset(files))
        # Pillow's libjpeg decode = TF's INTEGER_ACCURATE decode.
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        counts, sums, sums_sq = reference_sums(images)
        self.assertAllEqual(stats.counts, counts)
        self.assertAllClose(
            stats.std("luma"),
            reference_std(counts, sums, sums_sq, [0]),
            rtol=1e-4,
        )
        self.assertAllClose(
            stats.std("chroma"),
            reference_std(counts, sums, sums_sq, [1, 2]),
            rtol=1e-4,
        )
        self.assertAllClose(
            stats.mean("luma"),
            sums[0] / counts[0],
            rtol=1e-4,
            atol=1e-6 * np.abs(sums[0] / counts[0]).max(),
        )

    def test_merging_two_halves_equals_one_pass(self):
        files = [png_bytes(image) for image in synthetic_images()]
        dataset = examples_dataset(files)
        whole = statistics.compute(dataset)
        first = statistics.compute(dataset.take(2))
        second = statistics.compute(dataset.skip(2))
        merged = first.merge(second)
        self.assertEqual(merged.num_images, whole.num_images)
        self.assertAllEqual(merged.counts, whole.counts)
        self.assertAllClose(merged.sums, whole.sums, rtol=1e-12)
        self.assertAllClose(merged.sums_sq, whole.sums_sq, rtol=1e-12)
        self.assertAllClose(merged.std("chroma"), whole.std("chroma"))
        empty = statistics.BandStatistics.empty()
        self.assertAllClose(empty.merge(whole).std(), whole.std())

    def test_jpeg_files_and_bad_images(self):
        folder = self.create_tempdir().full_path
        paths = testing_utils.write_image_folder(folder, [3, 3, 5])
        files = [open(p, "rb").read() for p in paths] + [b"", b"junk"]
        dataset = examples_dataset(files, [3, 3, 5, 1, 1])
        stats = statistics.compute(dataset, ignore_errors=True)
        self.assertEqual(stats.num_images, 3)
        self.assertEqual(stats.count("luma"), 3 * 4 * 6)
        self.assertEqual(stats.count("chroma"), 2 * stats.count("luma"))
        with self.assertRaises(tf.errors.OpError):
            statistics.compute(dataset)

    def test_indices_name_the_analysed_examples(self):
        folder = self.create_tempdir().full_path
        paths = testing_utils.write_image_folder(folder, [3, 5, 7])
        files = [open(p, "rb").read() for p in paths]
        files = [files[0], b"junk", files[1], b"", files[2]]
        dataset = examples_dataset(files, with_index=True)
        stats, indices = statistics.compute_with_indices(
            dataset, ignore_errors=True
        )
        self.assertAllEqual(indices, [0, 2, 4])
        self.assertEqual(indices.dtype, np.int64)
        good = statistics.compute(
            examples_dataset([files[0], files[2], files[4]])
        )
        self.assertEqual(stats.num_images, 3)
        self.assertAllEqual(stats.sums, good.sums)  # Same order, same bits.
        self.assertAllEqual(stats.sums_sq, good.sums_sq)
        # Without an "index" the indices are -1.
        _, indices = statistics.compute_with_indices(
            examples_dataset(files[:1])
        )
        self.assertAllEqual(indices, [-1])
        empty, indices = statistics.compute_with_indices(dataset.take(0))
        self.assertEqual(empty.num_images, 0)
        self.assertEqual(indices.shape, (0,))


class BandStatisticsTest(tf.test.TestCase):
    def stats(self):
        files = [png_bytes(image) for image in synthetic_images()[:2]]
        return statistics.compute(
            examples_dataset(files), chroma_subsampling="4:2:0"
        )

    def test_json_round_trip_is_exact(self):
        stats = self.stats()
        path = os.path.join(self.create_tempdir().full_path, "s.json")
        stats.save(path)
        loaded = statistics.BandStatistics.load(path)
        self.assertEqual(loaded.num_images, stats.num_images)
        self.assertEqual(loaded.chroma_subsampling, "4:2:0")
        self.assertAllEqual(loaded.counts, stats.counts)
        self.assertAllEqual(loaded.sums, stats.sums)
        self.assertAllEqual(loaded.sums_sq, stats.sums_sq)
        summary = json.loads(stats.to_json())["summary"]
        self.assertAllClose(summary["luma"]["std"], stats.std("luma"))

    def test_arrays_round_trip_through_a_shard_file_is_exact(self):
        stats = self.stats()
        path = os.path.join(self.create_tempdir().full_path, "s.npz")
        files.write_npz(path, {**stats.to_arrays(), "other": np.zeros(2)})
        loaded = statistics.BandStatistics.from_arrays(files.read_npz(path))
        self.assertEqual(loaded.num_images, stats.num_images)
        self.assertEqual(loaded.chroma_subsampling, "4:2:0")
        self.assertAllEqual(loaded.counts, stats.counts)
        self.assertAllEqual(loaded.sums, stats.sums)
        self.assertAllEqual(loaded.sums_sq, stats.sums_sq)
        with self.assertRaisesRegex(ValueError, "no sums_sq"):
            arrays = stats.to_arrays()
            del arrays["sums_sq"]
            statistics.BandStatistics.from_arrays(arrays)

    def test_save_replaces_the_file_whole(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "s.json")
        statistics.BandStatistics.empty().save(path)
        self.stats().save(path)
        self.assertEqual(os.listdir(folder), ["s.json"])  # No temporaries.
        self.assertEqual(statistics.BandStatistics.load(path).num_images, 2)

    def test_errors(self):
        stats = self.stats()
        with self.assertRaisesRegex(ValueError, "subsampling"):
            stats.merge(statistics.BandStatistics.empty("4:4:4"))
        with self.assertRaisesRegex(ValueError, "component"):
            stats.std("green")
        with self.assertRaisesRegex(ValueError, "no luma blocks"):
            statistics.BandStatistics.empty().std("luma")
        path = self.create_tempfile(content='{"format": "x"}').full_path
        with self.assertRaisesRegex(ValueError, "not a deepn_jpeg"):
            statistics.BandStatistics.load(path)
        path = self.create_tempfile(content='{"format": ').full_path
        with self.assertRaisesRegex(ValueError, "unreadable"):
            statistics.BandStatistics.load(path)
