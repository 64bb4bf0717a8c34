import io

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image, JpegImagePlugin

from deepn_jpeg import codec, tables
from tests import testing_utils

# Pillow's get_sampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0.
PILLOW_SAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def random_tables(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, (2, 8, 8))


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def pillow_decode(jpeg):
    """libjpeg's default ISLOW IDCT, through Pillow."""
    with Image.open(io.BytesIO(jpeg)) as image:
        return np.asarray(image.convert("RGB"))


def smooth_image(height=64, width=64):
    y, x = np.mgrid[:height, :width] / max(height, width)
    image = np.stack(
        [128 + 100 * np.sin(3 * x), 128 + 80 * np.cos(2 * y), 60 + 120 * x * y],
        axis=-1,
    )
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


class EncodeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("444", "4:4:4", 0),
        ("422", "4:2:2", 1),
        ("420", "4:2:0", 2),
        ("all_ones", "4:2:0", "ones"),
        ("all_255", "4:4:4", "255"),
    )
    def test_tables_round_trip_exactly(self, subsampling, which):
        if which == "ones":
            luma = chroma = np.ones((8, 8), int)
        elif which == "255":
            luma = chroma = np.full((8, 8), 255)
        else:
            luma, chroma = random_tables(which)
        jpeg = codec.encode(
            testing_utils.random_image(), luma, chroma, subsampling
        )
        written = codec.read_qtables(jpeg)
        self.assertEqual(sorted(written), [0, 1])
        self.assertAllEqual(written[0], luma)
        self.assertAllEqual(written[1], chroma)
        with Image.open(io.BytesIO(jpeg)) as image:
            self.assertAllEqual(np.reshape(image.quantization[0], (8, 8)), luma)
            self.assertAllEqual(
                np.reshape(image.quantization[1], (8, 8)), chroma
            )
            self.assertEqual(
                JpegImagePlugin.get_sampling(image),
                PILLOW_SAMPLING[subsampling],
            )

    @parameterized.named_parameters(("444", "4:4:4"), ("420", "4:2:0"))
    def test_decodes_in_pillow_and_tf(self, subsampling):
        image = testing_utils.random_image(40, 56)
        luma, chroma = tables.standard_qtables(75)
        jpeg = codec.encode(image, luma, chroma, subsampling)
        pillow = pillow_decode(jpeg)
        decoded = tf.io.decode_jpeg(
            jpeg, channels=3, dct_method="INTEGER_ACCURATE"
        ).numpy()
        self.assertEqual(pillow.shape, image.shape)
        self.assertEqual(decoded.shape, image.shape)
        self.assertAllClose(pillow, decoded, atol=2)
        self.assertGreater(psnr(image, decoded), 25)

    def test_all_ones_table_is_near_lossless(self):
        ones = np.ones((8, 8), int)
        image = smooth_image()
        decoded = pillow_decode(codec.encode(image, ones, ones, "4:4:4"))
        self.assertGreater(psnr(image, decoded), 40)

    def test_all_ones_table_is_near_lossless_on_a_real_image(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        image = np.asarray(
            Image.open(testing_utils.sample_paths(1)[0]).convert("RGB")
        )
        ones = np.ones((8, 8), int)
        decoded = pillow_decode(codec.encode(image, ones, ones, "4:4:4"))
        self.assertGreater(psnr(image, decoded), 40)

    def test_coarser_tables_give_smaller_files_on_real_images(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        # A DeepN-JPEG-like table (PLM of a decaying std) at three scales.
        u, v = np.mgrid[:8, :8]
        base = tables.plm(300.0 / (1 + u + v) ** 1.5)
        for path in testing_utils.sample_paths(3):
            image = np.asarray(Image.open(path).convert("RGB"))
            sizes = [
                len(
                    codec.encode(
                        image,
                        tables.scale_qtable(base, q),
                        tables.scale_qtable(tables.STANDARD_CHROMA_QTABLE, q),
                    )
                )
                for q in (90, 50, 10)
            ]
            self.assertLess(sizes[1], sizes[0], path)
            self.assertLess(sizes[2], sizes[1], path)

    def test_optimize_gives_a_smaller_or_equal_file_with_same_pixels(self):
        image = testing_utils.random_image(64, 64)
        luma, chroma = tables.standard_qtables(50)
        small = codec.encode(image, luma, chroma, optimize=True)
        plain = codec.encode(image, luma, chroma, optimize=False)
        self.assertLessEqual(len(small), len(plain))
        self.assertAllEqual(pillow_decode(small), pillow_decode(plain))

    def test_rejects_bad_arguments(self):
        image = testing_utils.random_image()
        ones = np.ones((8, 8), int)
        with self.assertRaisesRegex(ValueError, "1, 255"):
            codec.encode(image, np.zeros((8, 8), int), ones)
        with self.assertRaisesRegex(ValueError, "1, 255"):
            codec.encode(image, ones, np.full((8, 8), 256))
        with self.assertRaisesRegex(ValueError, "64 entries"):
            codec.encode(image, np.ones((4, 4), int), ones)
        with self.assertRaisesRegex(ValueError, "subsampling"):
            codec.encode(image, ones, ones, "4:1:1")
        with self.assertRaisesRegex(ValueError, "uint8"):
            codec.encode(image.astype(np.float32), ones, ones)


class ReadQtablesTest(tf.test.TestCase):
    def test_rejects_non_jpeg(self):
        buffer = io.BytesIO()
        Image.fromarray(testing_utils.random_image()).save(buffer, "PNG")
        with self.assertRaisesRegex(ValueError, "not a JPEG"):
            codec.read_qtables(buffer.getvalue())

    def test_zigzag_is_a_permutation_ending_at_the_corner(self):
        self.assertAllEqual(np.sort(codec.ZIGZAG), np.arange(64))
        self.assertAllEqual(codec.ZIGZAG[:4], [0, 1, 8, 16])
        self.assertEqual(codec.ZIGZAG[-1], 63)

    def test_sixteen_bit_tables(self):
        # A hand-made DQT segment with a 16-bit table in slot 2.
        zigzag = (np.arange(64) * 300).astype(">u2")
        segment = bytes([0x12]) + zigzag.tobytes()
        length = (len(segment) + 2).to_bytes(2, "big")
        data = b"\xff\xd8\xff\xdb" + length + segment + b"\xff\xd9"
        table = codec.read_qtables(data)[2]
        expected = np.empty(64, int)
        expected[codec.ZIGZAG] = np.arange(64) * 300
        self.assertAllEqual(table, expected.reshape(8, 8))


class TfEncodeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("444", "4:4:4"), ("420", "4:2:0"))
    def test_eager_equals_dataset_map_equals_encode(self, subsampling):
        image = testing_utils.random_image(32, 48)
        luma, chroma = random_tables(3)
        eager = codec.tf_encode(image, luma, chroma, subsampling)
        self.assertEqual(
            eager.numpy(), codec.encode(image, luma, chroma, subsampling)
        )
        dataset = tf.data.Dataset.from_tensors(image).map(
            lambda x: codec.tf_encode(x, luma, chroma, subsampling)
        )
        self.assertEqual(dataset.element_spec, tf.TensorSpec([], tf.string))
        self.assertEqual(next(iter(dataset)).numpy(), eager.numpy())

    def test_parallel_map_keeps_every_file_in_order(self):
        images = np.stack(
            [testing_utils.random_image(16, 24, seed=i) for i in range(6)]
        )
        luma, chroma = tables.standard_qtables(90)
        dataset = tf.data.Dataset.from_tensor_slices(images).map(
            lambda x: codec.tf_encode(x, luma, chroma, "4:4:4"),
            num_parallel_calls=3,
        )
        for image, jpeg in zip(images, dataset, strict=True):
            self.assertEqual(
                jpeg.numpy(), codec.encode(image, luma, chroma, "4:4:4")
            )

    def test_bad_tables_fail_at_trace_time(self):
        with self.assertRaisesRegex(ValueError, "1, 255"):
            codec.tf_encode(
                testing_utils.random_image(), np.zeros((8, 8), int), None
            )
