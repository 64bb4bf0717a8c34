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

    def test_json_nested_too_deep_is_one_line_naming_the_file(self):
        path = os.path.join(self.create_tempdir().full_path, "c.json")
        with open(path, "w") as f:
            f.write("[" * 100_000 + "]" * 100_000)
        with self.assertRaisesRegex(ValueError, "c.json: unreadable") as e:
            files.read_json(path)
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


class JsonNanTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("nan", float("nan")), ("inf", float("inf")), ("ninf", -float("inf"))
    )
    def test_nan_and_infinity_are_refused_and_nothing_written(self, value):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "r.json")
        with self.assertRaisesRegex(ValueError, "r.json: not written") as e:
            files.write_json(path, {"top1": [1.0, value]})
        self.assertNotIn("\n", str(e.exception))
        self.assertEqual(os.listdir(folder), [])
        log = os.path.join(folder, "m.jsonl")
        files.append_jsonl(log, {"a": 1})
        with self.assertRaisesRegex(ValueError, "m.jsonl: not written"):
            files.append_jsonl(log, {"a": value})
        self.assertEqual(files.read_jsonl(log), [{"a": 1}])


def make_victims(test):
    """A file, a folder and a folder behind a link, all outside the run."""
    outside = test.create_tempdir().full_path
    victims = {}
    for name in ("victim.txt", "victimdir/keep.txt", "linked/keep.txt"):
        path = os.path.join(outside, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("precious")
        victims[name] = path
    return outside, victims


class RemoveWithinTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.outside, self.victims = make_victims(self)
        self.root = os.path.join(self.create_tempdir().full_path, "a", "run")
        os.makedirs(os.path.join(self.root, "sub"))
        for name in ("mine.txt", "sub/x.npz", "sub/y.npz"):
            with open(os.path.join(self.root, name), "w") as f:
                f.write("ours")
        # A link inside the folder to a folder outside, and a link folder.
        os.symlink(
            os.path.join(self.outside, "linked"),
            os.path.join(self.root, "link"),
        )

    def assert_victims_survive(self):
        for path in self.victims.values():
            self.assertEqual(read(path), b"precious", path)

    def test_names_out_of_the_folder_are_refused_and_kept(self):
        names = [
            "../../victim.txt",
            os.path.join(self.outside, "victim.txt"),
            os.path.join(self.outside, "victimdir"),
            "../../"
            + os.path.relpath(
                os.path.join(self.outside, "victimdir"), self.root
            ),
            "sub/../../victim.txt",
            "link/keep.txt",  # Through the link: leaves the folder.
            "",
            ".",
            "sub/..",
        ]
        refused = files.remove_within(self.root, names, patterns=True)
        self.assertLen(refused, len(names))
        self.assert_victims_survive()
        self.assertTrue(os.path.exists(os.path.join(self.root, "mine.txt")))

    def test_link_is_removed_as_a_link_never_followed(self):
        for patterns in (False, True):
            os.makedirs(self.root, exist_ok=True)
            link = os.path.join(self.root, "link")
            if not os.path.lexists(link):
                os.symlink(os.path.join(self.outside, "linked"), link)
            names = ["link"] if not patterns else ["l*"]
            self.assertEqual(
                files.remove_within(self.root, names, patterns), []
            )
            self.assertFalse(os.path.lexists(link))
            self.assert_victims_survive()

    def test_names_inside_are_removed_with_folders_left_empty(self):
        refused = files.remove_within(
            self.root, ["mine.txt", "sub/*.npz", "missing"], patterns=True
        )
        self.assertEqual(refused, [])
        self.assertEqual(sorted(os.listdir(self.root)), ["link"])
        # Names taken as they are: `[1]` is not a pattern then.
        weird = os.path.join(self.root, "a[1].jpg")
        with open(weird, "w") as f:
            f.write("ours")
        files.remove_within(self.root, ["a[1].jpg"])
        self.assertFalse(os.path.exists(weird))
        self.assertTrue(os.path.isdir(self.root))

    def test_outside_problem_names_the_problem(self):
        self.assertIsNone(files.outside_problem(self.root, "sub/x.npz"))
        self.assertIsNone(files.outside_problem(self.root, "link"))
        self.assertEqual(
            files.outside_problem(self.root, "/etc/passwd"), "an absolute path"
        )
        self.assertEqual(
            files.outside_problem(self.root, "../x"), "a path with '..'"
        )
        self.assertIn("link out", files.outside_problem(self.root, "link/x"))
