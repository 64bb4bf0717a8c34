import os
import re

import tensorflow as tf
from absl.testing import parameterized

from compression_helps.sources import guard
from tests import testing_utils


class HeaderProblemTest(tf.test.TestCase, parameterized.TestCase):
    """`guard.tf_header_problem` says what Pillow says of the header."""

    def _both(self, data, limits=None):
        limits = limits or guard.Limits()
        eager = guard.tf_header_problem(tf.constant(data), limits)
        mapped = tf.data.Dataset.from_tensors(data).map(
            lambda x: guard.tf_header_problem(x, limits)
        )
        self.assertEqual(eager, next(iter(mapped)))
        return eager.numpy().decode(), testing_utils.pillow_header_problem(
            data, limits
        )

    @parameterized.parameters(*testing_utils.IMAGE_KINDS)
    def test_real_files_pass(self, kind):
        self.assertEqual(self._both(testing_utils.image_file(kind)), ("", None))
        # What TF decodes is what the header says.
        image = tf.io.decode_image(
            testing_utils.image_file(kind), expand_animations=False
        )
        self.assertEqual(image.shape[:2], (8, 8))

    @parameterized.parameters(*testing_utils.IMAGE_KINDS)
    def test_headers_claiming_too_many_pixels(self, kind):
        # 90 MP: over Pillow's limit (89.5 MP), under twice it, where Pillow
        # would not say the size.
        ours, pillows = self._both(
            testing_utils.image_claiming(kind, 10000, 9000)
        )
        self.assertEqual(
            ours, "too many pixels: 10000x9000 = 90.0 MP > 89.5 MP limit"
        )
        if kind != "webp_alpha":
            self.assertStartsWith(pillows, ours)
        else:  # Pillow cannot open a canvas larger than its frame; TF fails.
            self.assertIsNone(pillows)

    def test_sides_that_overflow_an_int64_product(self):
        ours, _ = self._both(
            testing_utils.image_claiming("png", 2**32 - 1, 2**32 - 1)
        )
        self.assertStartsWith(ours, "too many pixels: 4294967295x4294967295")

    def test_file_too_large(self):
        data = testing_utils.image_file("png")
        limits = guard.Limits(max_file_bytes=len(data) - 1)
        ours, pillows = self._both(data, limits)
        self.assertEqual(ours, pillows)
        self.assertStartsWith(ours, "file too large")

    @parameterized.parameters(b"", b"x", b"RIFF", b"GIF8", b"\x89PNG\r\n\x1a\n")
    def test_short_files_are_left_to_the_decoder(self, data):
        self.assertEqual(self._both(data)[0], "")

    def test_broken_jpeg_header_is_left_to_the_decoder(self):
        # `tf.image.extract_jpeg_shape` fails on these; the guard must not.
        for data in (b"\xff\xd8garbage", b"\xff\xd8\xff\xe0\x00"):
            self.assertEqual(self._both(data)[0], "")

    def test_jpeg_frame_size_as_libjpeg_reads_it(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        for path in testing_utils.sample_paths(50):
            with open(path, "rb") as f:
                data = f.read()
            height, width, _ = tf.image.extract_jpeg_shape(data).numpy()
            limits = guard.Limits(max_pixels=width * height - 1)
            self.assertEqual(
                guard.tf_header_problem(tf.constant(data), limits).numpy(),
                f"too many pixels: {width}x{height} = "
                f"{width * height / 1e6:.1f} MP > "
                f"{limits.max_pixels / 1e6:.1f} MP limit".encode(),
            )


def crafted_jpeg(before_sof=b"", after_soi=b"", cut_in_sof=False):
    """A JPEG claiming 9500 x 9500 pixels, with bytes before its frame."""
    data = testing_utils.image_claiming("jpeg", 9500, 9500)
    sof = data.index(b"\xff\xc0")
    data = data[:2] + after_soi + data[2:sof] + before_sof + data[sof:]
    if cut_in_sof:
        data = data[: data.index(b"\xff\xc0") + 6]
    return data


def libjpeg_size(data):
    """Width and height libjpeg reads from the header, or None."""
    try:
        height, width, _ = tf.image.extract_jpeg_shape(data).numpy()
    except tf.errors.InvalidArgumentError:
        return None
    return int(width), int(height)


class JpegMarkerWalkTest(tf.test.TestCase, parameterized.TestCase):
    """The guard reads the frame libjpeg and Pillow read, past any bytes."""

    def _guard(self, data):
        limits = guard.Limits(max_pixels=1)
        eager = guard.tf_header_problem(tf.constant(data), limits)
        mapped = tf.data.Dataset.from_tensors(data).map(
            lambda x: guard.tf_header_problem(x, limits)
        )
        self.assertEqual(eager, next(iter(mapped)))
        match = re.match(
            r"too many pixels: (\d+)x(\d+)", eager.numpy().decode()
        )
        return (int(match[1]), int(match[2])) if match else None

    @parameterized.named_parameters(
        ("zero_byte_before_sof", {"before_sof": b"\x00"}),
        ("garbage_before_sof", {"before_sof": b"garbage"}),
        ("fill_bytes", {"before_sof": b"\xff\xff\xff"}),
        ("stuffed_zero", {"before_sof": b"ab\xff\x00cd\xff\xff"}),
        ("garbage_after_soi", {"after_soi": b"\xff\xff\x00\x01"}),
        # Past several doublings of the window the marker is looked for in.
        ("long_garbage", {"before_sof": b"\x00" * 300_000}),
        ("garbage_at_a_window_edge", {"before_sof": b"\x00" * 63}),
    )
    def test_frame_after_extraneous_bytes_is_seen(self, craft):
        data = crafted_jpeg(**craft)
        self.assertEqual(libjpeg_size(data), (9500, 9500))
        self.assertEqual(self._guard(data), (9500, 9500))
        pillows = testing_utils.pillow_header_problem(data, guard.Limits())
        self.assertStartsWith(pillows, "too many pixels: 9500x9500")
        self.assertStartsWith(
            guard.tf_header_problem(tf.constant(data)).numpy().decode(),
            "too many pixels: 9500x9500 = 90.2 MP > 89.5 MP limit",
        )

    def test_soi_without_a_third_ff_is_walked_too(self):
        # libjpeg needs only FF D8; `tf.io.is_jpeg` wants FF D8 FF.
        data = crafted_jpeg(after_soi=b"\x00")
        self.assertEqual(libjpeg_size(data), (9500, 9500))
        self.assertEqual(self._guard(data), (9500, 9500))

    def test_truncated_frame_header_is_left_to_the_decoder(self):
        data = crafted_jpeg(before_sof=b"\x00", cut_in_sof=True)
        self.assertIsNone(libjpeg_size(data))
        self.assertIsNone(
            testing_utils.pillow_header_problem(data, guard.Limits())
        )
        self.assertIsNone(self._guard(data))

    def test_real_files_with_garbage_read_as_libjpeg_reads_them(self):
        image = testing_utils.random_image(24, 40)
        data = testing_utils.jpeg_bytes(image)
        sof = data.index(b"\xff\xc0")
        for extra in (b"\x00", b"\xff" * 5, b"zz\xff\x00"):
            crafted = data[:sof] + extra + data[sof:]
            self.assertEqual(libjpeg_size(crafted), (40, 24))
            self.assertEqual(self._guard(crafted), (40, 24))
            decoded = tf.io.decode_jpeg(crafted)
            self.assertEqual(decoded.shape[:2], (24, 40))


class SourcePixelLimitTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("jpeg", "jpeg", 13000, 13000, "13000x13000 = 169.0 MP"),
        # Over twice Pillow's own limit, where Pillow would not say the size.
        ("png", "png", 23000, 23000, "23000x23000 = 529.0 MP"),
    )
    def test_header_over_the_pixel_limit_is_refused(
        self, kind, width, height, detail
    ):
        data = testing_utils.image_claiming(kind, width, height)
        reason = (
            guard.tf_header_problem(
                tf.constant(data), guard.DEFAULT_LIMITS, guard.FLAG_HINT
            )
            .numpy()
            .decode()
        )
        self.assertEqual(
            reason,
            f"too many pixels: {detail} > 89.5 MP limit (raise --max_pixels)",
        )

    @parameterized.parameters(
        (13000, 13000, 13000 * 13000),
        # Beyond twice Pillow's limit.
        (23000, 23000, 23000 * 23000),
    )
    def test_limit_can_be_raised(self, width, height, limit):
        for kind in ("jpeg", "png"):
            data = tf.constant(
                testing_utils.image_claiming(kind, width, height)
            )
            self.assertEqual(
                guard.tf_header_problem(data, guard.Limits(limit)), b""
            )
            self.assertNotEqual(
                guard.tf_header_problem(data, guard.Limits(limit - 1)), b""
            )


class FileProblemTest(tf.test.TestCase, parameterized.TestCase):
    def test_good_file_passes(self):
        data = testing_utils.jpeg_bytes(testing_utils.random_image())
        path = self.create_tempfile("a.JPEG", content=data).full_path
        self.assertIsNone(guard.file_problem(path))

    def test_name_that_is_not_utf8_is_checked(self):
        folder = os.fsencode(self.create_tempdir().full_path)
        path = folder + b"/caf\xe9.JPEG"
        with open(path, "wb") as f:
            f.write(testing_utils.jpeg_bytes(testing_utils.random_image()))
        self.assertIsNone(guard.file_problem(path))

    def test_file_over_the_size_limit_is_refused_unread(self):
        path = self.create_tempfile(content="x" * 100).full_path
        limits = guard.Limits(max_file_bytes=10)
        self.assertEqual(
            guard.file_problem(path, limits), "file too large: 100 bytes > 10"
        )

    def test_fifo_is_refused_without_blocking(self):
        path = os.path.join(self.create_tempdir().full_path, "n0_fifo.JPEG")
        os.mkfifo(path)
        with testing_utils.fifo_unblocked_after(path, 20):
            self.assertEqual(
                guard.file_problem(path), "not a regular file: a FIFO"
            )

    @parameterized.parameters("/dev/zero", "/dev/urandom")
    def test_link_to_a_device_is_refused(self, device):
        path = os.path.join(self.create_tempdir().full_path, ".JPEG")
        os.symlink(device, path)
        self.assertEqual(
            guard.file_problem(path),
            "not a regular file: a character device (through a symbolic link)",
        )

    def test_limits_must_be_positive(self):
        with self.assertRaisesRegex(ValueError, "must be >= 1"):
            guard.Limits(max_pixels=0)
