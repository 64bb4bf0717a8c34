import os
import stat

import numpy as np
import tensorflow as tf

from compression_helps import evaluate, workdir


class AtomicPathTest(tf.test.TestCase):
    def test_renames_into_place_with_usual_permissions(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "out.npz")
        evaluate.write_npz(path, {"x": np.arange(3)})
        self.assertEqual(os.listdir(folder), ["out.npz"])
        umask = os.umask(0)
        os.umask(umask)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o666 & ~umask)  # Not a private 0600 file.
        self.assertAllEqual(np.load(path)["x"], np.arange(3))

    def test_failed_write_leaves_the_old_file_and_no_leftovers(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "table.json")
        with open(path, "w") as f:
            f.write("old")
        with self.assertRaises(RuntimeError):
            with workdir.atomic_path(path) as tmp_path:
                self.assertEqual(os.path.basename(tmp_path), "table.json")
                with open(tmp_path, "w") as f:
                    f.write("half")
                raise RuntimeError("crash while writing")
        self.assertEqual(os.listdir(folder), ["table.json"])
        with open(path) as f:
            self.assertEqual(f.read(), "old")
