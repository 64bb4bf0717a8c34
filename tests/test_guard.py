import os
from unittest import mock

import tensorflow as tf
from absl.testing import parameterized

from compression_helps import guard
from tests import testing_utils


class GuardTest(tf.test.TestCase, parameterized.TestCase):
    def test_good_image_passes(self):
        data = testing_utils.jpeg_bytes(testing_utils.random_image())
        self.assertIsNone(guard.bytes_problem(data))
        path = self.create_tempfile("a.JPEG", content=data).full_path
        self.assertEqual(guard.read_checked(path), (data, ""))

    @parameterized.named_parameters(
        (
            "jpeg",
            testing_utils.image_claiming("jpeg", 13000, 13000),
            "13000x13000 = 169.0 MP",
        ),
        # Over twice Pillow's own limit: Pillow says only the pixel count.
        (
            "png",
            testing_utils.image_claiming("png", 23000, 23000),
            ": 529.0 MP > 89.5 MP limit",
        ),
    )
    def test_header_over_the_pixel_limit_is_refused(self, data, detail):
        reason = guard.bytes_problem(data)
        self.assertStartsWith(reason, "too many pixels:")
        self.assertIn(detail, reason)
        self.assertLen(reason.splitlines(), 1)

    @parameterized.parameters(
        (13000, 13000, 13000 * 13000),
        # Beyond twice Pillow's limit, where Pillow refuses to open it.
        (23000, 23000, 23000 * 23000),
    )
    def test_limit_can_be_raised(self, width, height, limit):
        for data in (
            testing_utils.image_claiming("jpeg", width, height),
            testing_utils.image_claiming("png", width, height),
        ):
            self.assertIsNone(guard.bytes_problem(data, guard.Limits(limit)))
            self.assertIsNotNone(
                guard.bytes_problem(data, guard.Limits(limit - 1))
            )

    def test_refused_file_gives_no_bytes(self):
        data = testing_utils.image_claiming("jpeg", 13000, 13000)
        path = self.create_tempfile("bomb.JPEG", content=data).full_path
        image_bytes, reason = guard.read_checked(path)
        self.assertEqual(image_bytes, b"")
        self.assertStartsWith(reason, "too many pixels: 13000x13000")

    def test_name_that_is_not_utf8_is_read(self):
        data = testing_utils.jpeg_bytes(testing_utils.random_image())
        folder = os.fsencode(self.create_tempdir().full_path)
        path = folder + b"/caf\xe9.JPEG"
        with open(path, "wb") as f:
            f.write(data)
        self.assertEqual(guard.read_checked(path), (data, ""))
        dataset = tf.data.Dataset.from_tensors(path).map(guard.tf_read_checked)
        image_bytes, error = next(iter(dataset))
        self.assertEqual((image_bytes.numpy(), error.numpy()), (data, b""))

    def test_fifo_swapped_in_after_the_check_does_not_block(self):
        # The name passed `file_problem`, then became a FIFO: the open file
        # is checked again, and opening does not wait for a writer.
        path = os.path.join(self.create_tempdir().full_path, "late.JPEG")
        os.mkfifo(path)
        with (
            mock.patch.object(guard, "file_problem", return_value=None),
            testing_utils.fifo_unblocked_after(path, 20),
        ):
            self.assertEqual(
                guard.read_checked(path), (b"", "not a regular file: a FIFO")
            )

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
        with testing_utils.fifo_unblocked_after(path, 20):
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
            guard.tf_bytes_problem(
                tf.constant(testing_utils.image_claiming("jpeg", 20000, 9000))
            )
            .numpy()
            .decode(),
            guard.bytes_problem(
                testing_utils.image_claiming("jpeg", 20000, 9000)
            ),
        )
