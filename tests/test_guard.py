import os
import struct
import zlib

import tensorflow as tf
from absl.testing import parameterized

from compression_helps import guard
from tests import testing_utils


def jpeg_claiming(width, height):
    """A small JPEG whose SOF header claims another size."""
    data = bytearray(testing_utils.jpeg_bytes(testing_utils.random_image()))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_claiming(width, height):
    """A PNG header (IHDR) claiming a size, with a tiny IDAT."""

    def chunk(kind, body):
        crc = zlib.crc32(kind + body)
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


class GuardTest(tf.test.TestCase, parameterized.TestCase):
    def test_good_image_passes(self):
        data = testing_utils.jpeg_bytes(testing_utils.random_image())
        self.assertIsNone(guard.bytes_problem(data))
        path = self.create_tempfile("a.JPEG", content=data).full_path
        self.assertEqual(guard.read_checked(path), (data, ""))

    @parameterized.named_parameters(
        ("jpeg", jpeg_claiming(13000, 13000), "13000x13000 = 169.0 MP"),
        ("png", png_claiming(23000, 23000), "more than"),
    )
    def test_header_over_the_pixel_limit_is_refused(self, data, detail):
        reason = guard.bytes_problem(data)
        self.assertStartsWith(reason, "too many pixels:")
        self.assertIn(detail, reason)
        self.assertLen(reason.splitlines(), 1)

    def test_limit_can_be_raised(self):
        data = jpeg_claiming(13000, 13000)
        self.assertIsNone(guard.bytes_problem(data, guard.Limits(2 * 10**8)))

    def test_file_over_the_size_limit_is_refused_unread(self):
        path = self.create_tempfile(content="x" * 100).full_path
        limits = guard.Limits(max_file_bytes=10)
        self.assertEqual(
            guard.read_checked(path, limits),
            (b"", "file too large: 100 bytes > 10"),
        )

    def test_fifo_is_refused_without_blocking(self):
        path = os.path.join(self.create_tempdir().full_path, "n0_fifo.JPEG")
        os.mkfifo(path)
        self.assertEqual(
            guard.read_checked(path), (b"", "not a regular file: a FIFO")
        )

    @parameterized.parameters("/dev/zero", "/dev/urandom")
    def test_link_to_a_device_is_refused(self, device):
        path = os.path.join(self.create_tempdir().full_path, ".JPEG")
        os.symlink(device, path)
        _, reason = guard.read_checked(path)
        self.assertEqual(
            reason,
            "not a regular file: a character device (through a symbolic link)",
        )

    def test_tf_reader_matches_the_python_one(self):
        folder = self.create_tempdir().full_path
        good = os.path.join(folder, "good.JPEG")
        with open(good, "wb") as f:
            f.write(testing_utils.jpeg_bytes(testing_utils.random_image()))
        os.mkfifo(os.path.join(folder, "fifo.JPEG"))
        paths = [good, os.path.join(folder, "fifo.JPEG")]
        dataset = tf.data.Dataset.from_tensor_slices(paths).map(
            guard.tf_read_checked
        )
        for path, (data, error) in zip(paths, dataset, strict=True):
            expected = guard.read_checked(path)
            self.assertEqual(data.numpy(), expected[0])
            self.assertEqual(error.numpy().decode(), expected[1])

    def test_limits_must_be_positive(self):
        with self.assertRaisesRegex(ValueError, "must be >= 1"):
            guard.Limits(max_pixels=0)

    def test_unknown_bytes_are_left_to_the_decoder(self):
        self.assertIsNone(guard.bytes_problem(b"not an image"))
        self.assertEqual(
            guard.tf_bytes_problem(tf.constant(jpeg_claiming(20000, 9000)))
            .numpy()
            .decode(),
            guard.bytes_problem(jpeg_claiming(20000, 9000)),
        )
