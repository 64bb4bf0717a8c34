import io
import os
from unittest import mock

import jpeglib
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image, ImageFile, JpegImagePlugin

from deepn_jpeg.jpeg import codec, tables, tables_io
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


def tf_decode(jpeg):
    return tf.io.decode_jpeg(
        jpeg, channels=3, dct_method="INTEGER_ACCURATE"
    ).numpy()


def sampling_and_progressive(jpeg):
    """Pillow's get_sampling (from the SOF) and whether it is progressive."""
    with Image.open(io.BytesIO(jpeg)) as image:
        return (
            JpegImagePlugin.get_sampling(image),
            bool(image.info.get("progressive")),
        )


def mozjpeg_cases():
    for subsampling in codec.SUBSAMPLINGS:
        for scale in (10, 50, 90):
            name = f"{subsampling.replace(':', '')}_scale{scale}"
            yield name, subsampling, scale


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
                testing_utils.random_image(),
                np.zeros((8, 8), int),
                np.ones((8, 8), int),
            )


class MozjpegTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*mozjpeg_cases())
    def test_writes_the_requested_tables_and_subsampling(
        self, subsampling, scale
    ):
        luma, chroma = random_tables(scale)
        image = testing_utils.random_image(40, 56)
        jpeg = codec.encode(
            image, luma, chroma, subsampling, encoder="mozjpeg", scale=scale
        )
        written = codec.read_qtables(jpeg)
        self.assertEqual(sorted(written), [0, 1])
        self.assertAllEqual(written[0], tables.scale_qtable(luma, scale))
        self.assertAllEqual(written[1], tables.scale_qtable(chroma, scale))
        self.assertEqual(
            sampling_and_progressive(jpeg),
            (PILLOW_SAMPLING[subsampling], True),
        )
        self.assertEqual(tf_decode(jpeg).shape, image.shape)

    @parameterized.named_parameters(("444", "4:4:4"), ("420", "4:2:0"))
    def test_libjpeg_stays_baseline(self, subsampling):
        luma, chroma = tables.standard_qtables(50)
        jpeg = codec.encode(
            testing_utils.random_image(), luma, chroma, subsampling
        )
        self.assertEqual(
            sampling_and_progressive(jpeg),
            (PILLOW_SAMPLING[subsampling], False),
        )

    def test_all_ones_table_is_near_lossless(self):
        ones = np.ones((8, 8), int)
        image = smooth_image()
        jpeg = codec.encode(image, ones, ones, "4:4:4", encoder="mozjpeg")
        self.assertAllEqual(codec.read_qtables(jpeg)[0], ones)
        self.assertGreater(psnr(image, tf_decode(jpeg)), 40)

    def test_smaller_than_libjpeg_at_a_similar_psnr_on_real_images(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        for path in testing_utils.sample_paths(2):
            image = np.asarray(Image.open(path).convert("RGB"))
            for quality in (20, 80):
                luma, chroma = tables.standard_qtables(quality)
                files = {
                    encoder: codec.encode(image, luma, chroma, encoder=encoder)
                    for encoder in codec.ENCODERS
                }
                db = {e: psnr(image, tf_decode(f)) for e, f in files.items()}
                with self.subTest(path=path, quality=quality):
                    self.assertLess(
                        len(files["mozjpeg"]), len(files["libjpeg"])
                    )
                    # Same tables, same quality: trellis moves little.
                    self.assertLess(abs(db["mozjpeg"] - db["libjpeg"]), 1.5)

    def test_parallel_map_with_both_encoders_gives_the_bytes_of_encode(self):
        images = np.stack(
            [testing_utils.random_image(32, 40, seed=i) for i in range(8)]
        )
        luma, chroma = tables.standard_qtables(60)

        def both(image):
            return tf.stack(
                [
                    codec.tf_encode(image, luma, chroma, encoder=encoder)
                    for encoder in codec.ENCODERS
                ]
            )

        dataset = tf.data.Dataset.from_tensor_slices(images).map(
            both, num_parallel_calls=4
        )
        for image, files in zip(images, dataset, strict=True):
            for encoder, jpeg in zip(codec.ENCODERS, files, strict=True):
                self.assertEqual(
                    jpeg.numpy(),
                    codec.encode(image, luma, chroma, encoder=encoder),
                )

    def test_leaves_no_temporary_file(self):
        folder = self.create_tempdir().full_path
        luma, chroma = tables.standard_qtables(50)
        with mock.patch.object(codec, "_TEMP_DIR", folder):
            codec.encode(
                testing_utils.random_image(), luma, chroma, encoder="mozjpeg"
            )
        self.assertEmpty(os.listdir(folder))

    def test_loads_mozjpeg_again_after_other_code_switched_jpeglib(self):
        image = testing_utils.random_image()
        luma, chroma = tables.standard_qtables(50)
        expected = codec.encode(image, luma, chroma, encoder="mozjpeg")
        self.addCleanup(jpeglib.version.set, "mozjpeg403")
        jpeglib.version.set("6b")
        self.assertEqual(
            codec.encode(image, luma, chroma, encoder="mozjpeg"), expected
        )
        self.assertEqual(jpeglib.version.get(), "mozjpeg403")

    def test_a_file_from_another_jpeglib_library_is_refused(self):
        luma, chroma = tables.standard_qtables(50)
        self.addCleanup(jpeglib.version.set, "mozjpeg403")
        jpeglib.version.set("6b")
        # As if another thread switched the library after the check.
        with mock.patch.object(jpeglib.version, "get", return_value="x"):
            with mock.patch.object(jpeglib.version, "set"):
                with self.assertRaisesRegex(RuntimeError, "non-progressive"):
                    codec.encode(
                        testing_utils.random_image(),
                        luma,
                        chroma,
                        encoder="mozjpeg",
                    )

    def test_rejects_bad_settings_in_one_line(self):
        image = testing_utils.random_image()
        ones = np.ones((8, 8), int)
        cases = [
            (dict(encoder="cjpeg"), "encoder must be one of"),
            (dict(encoder="mozjpeg", optimize=False), "libjpeg only"),
            (dict(scale=0), r"scale must be in \[1, 100\]"),
            (dict(scale=101), r"scale must be in \[1, 100\]"),
            (dict(scale=50.5), "scale must be an integer"),
        ]
        for kwargs, message in cases:
            with self.subTest(message):
                with self.assertRaisesRegex(ValueError, message) as e:
                    codec.encode(image, ones, ones, **kwargs)
                self.assertNotIn("\n", str(e.exception))
        with self.assertRaisesRegex(ValueError, "encoder must be one of"):
            codec.tf_encode(image, ones, ones, encoder="cjpeg")


class TableSetArgumentTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        u, v = np.mgrid[:8, :8]
        self.luma = tables.plm(300.0 / (1 + u + v) ** 1.5)
        self.chroma = tables.STANDARD_CHROMA_QTABLE
        folder = self.create_tempdir().full_path
        tables.save_json(
            os.path.join(folder, "free.json"), self.luma, self.chroma
        )
        tables.save_json(
            os.path.join(folder, "lite.json"),
            self.luma,
            self.chroma,
            subsampling="4:4:4",
            encoder="mozjpeg",
        )
        # The package's shipped tables folder, as a temporary one.
        patcher = mock.patch.object(
            tables_io, "_shipped_dir", return_value=folder
        )
        patcher.start()
        self.addCleanup(patcher.stop)
        self.image = testing_utils.random_image(40, 48)

    def scaled(self, scale):
        return (
            tables.scale_qtable(self.luma, scale),
            tables.scale_qtable(self.chroma, scale),
        )

    @parameterized.named_parameters(
        ("scale1", 1), ("scale20", 20), ("scale50", 50), ("scale100", 100)
    )
    def test_named_tables_equal_the_scaled_tables(self, scale):
        self.assertEqual(
            codec.encode(self.image, tables="free", scale=scale),
            codec.encode(self.image, *self.scaled(scale), "4:2:0"),
        )
        self.assertEqual(
            codec.encode(self.image, tables="lite", scale=scale),
            codec.encode(
                self.image, *self.scaled(scale), "4:4:4", encoder="mozjpeg"
            ),
        )

    def test_scale_50_and_no_scale_are_the_tables_as_stored(self):
        jpeg = codec.encode(self.image, tables="free")
        self.assertEqual(
            jpeg, codec.encode(self.image, tables="free", scale=50)
        )
        self.assertAllEqual(codec.read_qtables(jpeg)[0], self.luma)

    def test_table_set_objects_and_files_work_like_names(self):
        tableset = tables.load_tableset("lite")
        path = tables.tableset_file("lite")
        expected = codec.encode(self.image, tables="lite")
        self.assertEqual(codec.encode(self.image, tables=tableset), expected)
        self.assertEqual(codec.encode(self.image, tables=path), expected)
        self.assertEqual(
            sampling_and_progressive(expected), (PILLOW_SAMPLING["4:4:4"], True)
        )

    def test_fixed_settings_cannot_be_overridden(self):
        with self.assertRaisesRegex(ValueError, "fixes encoder 'mozjpeg'"):
            codec.encode(self.image, tables="lite", encoder="libjpeg")
        with self.assertRaisesRegex(ValueError, "fixes subsampling '4:4:4'"):
            codec.encode(self.image, tables="lite", subsampling="4:2:0")
        # Asking for what the set fixes is no conflict.
        self.assertEqual(
            codec.encode(
                self.image,
                tables="lite",
                subsampling="4:4:4",
                encoder="mozjpeg",
            ),
            codec.encode(self.image, tables="lite"),
        )
        # A set that fixes nothing takes any setting.
        self.assertEqual(
            codec.encode(self.image, tables="free", encoder="mozjpeg"),
            codec.encode(self.image, self.luma, self.chroma, encoder="mozjpeg"),
        )

    def test_tables_given_one_way_only(self):
        with self.assertRaisesRegex(ValueError, "not both"):
            codec.encode(self.image, self.luma, self.chroma, tables="free")
        with self.assertRaisesRegex(ValueError, "not both"):
            codec.tf_encode(self.image, self.luma, tables="free")
        with self.assertRaisesRegex(ValueError, "or tables="):
            codec.encode(self.image)
        with self.assertRaisesRegex(ValueError, "or tables="):
            codec.encode(self.image, self.luma)

    def test_unknown_name_is_one_line_listing_the_shipped_sets(self):
        with self.assertRaisesRegex(
            FileNotFoundError, r"^nope: .*\(shipped: free, lite\)$"
        ):
            codec.encode(self.image, tables="nope")

    def test_tf_encode_with_a_name_eager_and_in_dataset_map(self):
        expected = codec.encode(self.image, tables="lite", scale=30)
        eager = codec.tf_encode(self.image, tables="lite", scale=30)
        self.assertEqual(eager.numpy(), expected)
        dataset = tf.data.Dataset.from_tensors(self.image).map(
            lambda x: codec.tf_encode(x, tables="lite", scale=30)
        )
        self.assertEqual(next(iter(dataset)).numpy(), expected)


class HostileImageTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(
        shape=[(0, 16, 3), (16, 0, 3), (1, codec.MAX_SIDE + 1, 3)],
        encoder=list(codec.ENCODERS),
    )
    def test_image_without_a_jpeg_size_is_a_value_error(self, shape, encoder):
        ones = np.ones((8, 8), int)
        with self.assertRaisesRegex(ValueError, "each side must be 1..65500"):
            codec.encode(np.zeros(shape, np.uint8), ones, ones, encoder=encoder)

    def test_file_larger_than_pillows_buffer_is_written_as_pillow_would(self):
        # All-ones tables on noise at 4:4:4: about 3 bytes a pixel, more
        # than the 2 Pillow's buffer holds ("Suspension not allowed here").
        image = np.random.default_rng(0).integers(0, 256, (375, 500, 3))
        image = image.astype(np.uint8)
        ones = np.ones((8, 8), int)
        jpeg = codec.encode(image, ones, ones, subsampling="4:4:4")
        self.assertGreater(len(jpeg), 2 * 375 * 500)
        self.assertEqual(ImageFile.MAXBLOCK, 65536)  # Restored.
        # The bytes Pillow writes with a buffer that holds the file.
        with mock.patch.object(ImageFile, "MAXBLOCK", 1 << 24):
            buffer = io.BytesIO()
            Image.fromarray(image).save(
                buffer,
                "JPEG",
                qtables=[[1] * 64, [1] * 64],
                subsampling="4:4:4",
                optimize=True,
            )
        self.assertEqual(jpeg, buffer.getvalue())
        self.assertAllEqual(tf_decode(jpeg).shape, image.shape)
