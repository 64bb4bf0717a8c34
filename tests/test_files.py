import os
import stat

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.core import files


def read(path):
    with open(path, "rb") as f:
        return f.read()


class AtomicWriteTest(tf.test.TestCase):
    def test_renames_into_place_with_usual_permissions(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "out.npz")
        files.write_npz(path, {"x": np.arange(3)})
        self.assertEqual(os.listdir(folder), ["out.npz"])
        umask = os.umask(0)
        os.umask(umask)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o666 & ~umask)  # Not a private 0600 file.
        self.assertAllEqual(files.read_npz(path)["x"], np.arange(3))

    def test_failed_write_leaves_the_old_file_and_no_leftovers(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "table.json")
        with open(path, "w") as f:
            f.write("old")
        with self.assertRaises(RuntimeError):
            with files.atomic_path(path) as tmp_path:
                self.assertEqual(os.path.basename(tmp_path), "table.json")
                with open(tmp_path, "w") as f:
                    f.write("half")
                raise RuntimeError("crash while writing")
        self.assertEqual(os.listdir(folder), ["table.json"])
        with open(path) as f:
            self.assertEqual(f.read(), "old")

    def test_same_arrays_give_byte_identical_npz(self):
        folder = self.create_tempdir().full_path
        arrays = {"a": np.arange(6).reshape(2, 3), "b": np.array(["x", "yz"])}
        files.write_npz(os.path.join(folder, "1.npz"), arrays)
        files.write_npz(os.path.join(folder, "2.npz"), arrays)
        self.assertEqual(
            read(os.path.join(folder, "1.npz")),
            read(os.path.join(folder, "2.npz")),
        )


class ReadDamagedTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("empty", 0), ("truncated", 0.5))
    def test_json_is_one_line_naming_the_file(self, keep):
        path = os.path.join(self.create_tempdir().full_path, "c.json")
        files.write_json(path, {"a": list(range(100))})
        os.truncate(path, int(keep * os.path.getsize(path)))
        with self.assertRaisesRegex(ValueError, "c.json: unreadable") as e:
            files.read_json(path)
        self.assertNotIn("\n", str(e.exception))

    @parameterized.named_parameters(("empty", 0), ("truncated", 0.5))
    def test_npz_is_one_line_naming_the_file(self, keep):
        path = os.path.join(self.create_tempdir().full_path, "s.npz")
        files.write_npz(path, {"x": np.arange(1000)})
        os.truncate(path, int(keep * os.path.getsize(path)))
        with self.assertRaisesRegex(ValueError, "s.npz: unreadable") as e:
            files.read_npz(path)
        self.assertNotIn("\n", str(e.exception))

    def test_missing_file_is_not_found(self):
        with self.assertRaises(FileNotFoundError):
            files.read_npz("/nowhere/s.npz")
        with self.assertRaises(FileNotFoundError):
            files.read_json("/nowhere/c.json")


class DigestInputsTest(tf.test.TestCase):
    def test_folder_is_every_file_in_it_and_missing_is_an_error(self):
        folder = self.create_tempdir().full_path
        os.makedirs(os.path.join(folder, "sub"))
        for name in ("a", "sub/b"):
            with open(os.path.join(folder, name), "w") as f:
                f.write(name)
        digests = files.digest_inputs([folder])
        self.assertEqual(
            sorted(digests),
            [os.path.join(folder, "a"), os.path.join(folder, "sub/b")],
        )
        with self.assertRaisesRegex(FileNotFoundError, "nowhere"):
            files.digest_inputs(["/nowhere"])
