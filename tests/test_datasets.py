import dataclasses
import functools
import http.server
import json
import os
import threading
import time
import zipfile

import tensorflow as tf

from compression_helps.core import imagenet, rundir
from compression_helps.sources import datasets, folders
from tests import testing_utils

BOMB_REASON = (
    "too many pixels: 13000x13000 = 169.0 MP > 89.5 MP limit "
    "(raise --max_pixels)"
)


class ClassIndexTest(tf.test.TestCase):
    def test_index_is_sorted_wnid_order(self):
        wnids = imagenet.wnids()
        self.assertLen(wnids, 1000)
        self.assertEqual(list(wnids), sorted(wnids))
        self.assertEqual(wnids[0], "n01440764")


class FolderTest(tf.test.TestCase):
    def test_both_layouts_and_unknown_labels(self):
        root = self.create_tempdir().full_path
        os.makedirs(os.path.join(root, "n01443537"))
        image = testing_utils.jpeg_bytes(testing_utils.random_image())
        files = {
            "n01443537/a.JPEG": 1,  # <wnid>/<any>
            "n01440764_b.jpeg": 0,  # <wnid>_<any>
            "cat.png": -1,  # no wnid
            "n99999999_c.JPEG": -1,  # not an ImageNet wnid
        }
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(image)
        with open(os.path.join(root, "notes.txt"), "w") as f:
            f.write("not an image")
        examples = folders.folder_examples(root)
        got = {os.path.relpath(p, root): label for p, label in examples}
        self.assertEqual(got, files)

    def test_load_yields_original_bytes_in_sorted_order(self):
        root = self.create_tempdir().full_path
        paths = testing_utils.write_image_folder(root, [5, 3, 7])
        source = datasets.load(root, limit=2)
        self.assertEqual(source.num_examples, 2)
        examples = list(source.dataset.as_numpy_iterator())
        expected = sorted(paths)[:2]
        self.assertEqual(
            [e["id"].decode() for e in examples],
            [os.path.basename(p) for p in expected],
        )
        for e, path in zip(examples, expected, strict=True):
            with open(path, "rb") as f:
                self.assertEqual(e["image_bytes"], f.read())
        labels = {p: label for p, label in zip(paths, [5, 3, 7], strict=True)}
        self.assertEqual(
            [int(e["label"]) for e in examples], [labels[p] for p in expected]
        )

    def test_missing_folder_is_a_clear_error(self):
        with self.assertRaisesRegex(
            FileNotFoundError, "nowhere: not a directory"
        ):
            datasets.load("/nowhere")

    def test_empty_folder_is_a_clear_error(self):
        root = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, "no image files"):
            datasets.load(root)


class GuardedFolderTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.root = self.create_tempdir().full_path
        wnids = imagenet.wnids()
        self.good = testing_utils.jpeg_bytes(testing_utils.random_image())
        self.names = {
            "good": f"{wnids[0]}_good.JPEG",
            "bomb": f"{wnids[1]}_bomb.JPEG",
            "fifo": f"{wnids[2]}_fifo.JPEG",
            "gone": f"{wnids[3]}_gone.JPEG",
        }
        for kind, data in (
            ("good", self.good),
            ("bomb", testing_utils.image_claiming("jpeg", 13000, 13000)),
        ):
            with open(self.path(kind), "wb") as f:
                f.write(data)
        os.mkfifo(self.path("fifo"))
        os.symlink(os.path.join(self.root, "nowhere"), self.path("gone"))

    def path(self, kind):
        return os.path.join(self.root, self.names[kind])

    def examples(self, source):
        start = time.monotonic()
        with testing_utils.fifo_unblocked_after(self.path("fifo"), 20):
            examples = list(source.dataset.as_numpy_iterator())
        self.assertLess(time.monotonic() - start, 20, "blocked on the FIFO")
        return {e["id"].decode(): e for e in examples}

    def test_refused_files_carry_the_reason_and_no_bytes(self):
        examples = self.examples(datasets.load(self.root))
        expected = {
            "good": "",
            "bomb": BOMB_REASON,
            "fifo": "not a regular file: a FIFO",
            "gone": "unreadable file: No such file or directory",
        }
        for kind, reason in expected.items():
            example = examples[self.names[kind]]
            self.assertEqual(example["error"].decode(), reason)
            self.assertEqual(
                example["image_bytes"], self.good if kind == "good" else b""
            )

    def test_diagnose_reports_the_reason_with_the_real_path(self):
        source = datasets.load(self.root)
        ids = [source.id_of(i) for i in range(source.num_examples)]
        reasons = {"bomb": BOMB_REASON, "fifo": "not a regular file: a FIFO"}
        for kind, reason in reasons.items():
            index = ids.index(self.names[kind])
            with testing_utils.fifo_unblocked_after(self.path("fifo"), 20):
                skipped = datasets.diagnose(source, index, lambda e: None)
            self.assertEqual(
                skipped,
                rundir.SkippedImage(self.names[kind], self.path(kind), reason),
            )

    def test_max_pixels_raises_the_limit(self):
        config = datasets.DataConfig(self.root, max_pixels=13000 * 13000)
        bomb = self.examples(config.load())[self.names["bomb"]]
        self.assertEqual(bomb["error"], b"")
        self.assertNotEmpty(bomb["image_bytes"])
        with self.assertRaisesRegex(ValueError, "must be >= 1"):
            datasets.DataConfig(self.root, max_pixels=0).load()

    def test_usable_eagerly_and_in_a_filter(self):
        examples = [
            {"label": 3, "error": ""},
            {"label": -1, "error": ""},
            {"label": 3, "error": "not a regular file: a FIFO"},
        ]
        eager = [bool(datasets.usable(e)) for e in examples]
        self.assertEqual(eager, [True, False, False])
        unlabelled_ok = [
            bool(datasets.usable(e, require_label=False)) for e in examples
        ]
        self.assertEqual(unlabelled_ok, [True, True, False])
        dataset = tf.data.Dataset.from_tensor_slices(
            {k: [e[k] for e in examples] for k in ("label", "error")}
        )
        kept = dataset.filter(datasets.usable)
        self.assertEqual([int(e["label"]) for e in kept], [3])
        # Examples without "error" (made by hand) are fine.
        self.assertTrue(bool(datasets.usable({"label": tf.constant(0)})))

    def test_unreadable_example_is_named_by_its_own_id(self):
        source = datasets.load(self.root)

        def read(start, stop):  # Reading fails in TF, as a broken disk.
            missing = tf.data.Dataset.from_tensors("/nowhere/at/all")
            return missing.map(lambda path: {"x": tf.io.read_file(path)})

        broken = dataclasses.replace(source, read=read)
        skipped = datasets.diagnose(broken, 0, lambda e: None)
        self.assertEqual(skipped.id, source.id_of(0))
        self.assertEqual(skipped.path, os.path.join(self.root, skipped.id))
        self.assertEqual(
            skipped.reason,
            "unreadable file: /nowhere/at/all; No such file or directory",
        )
        # A split's examples are renumbered: its ids are its own.
        fit = datasets.split(source, "fit")
        first = next(fit.dataset.as_numpy_iterator())["id"].decode()
        self.assertEqual(fit.id_of(0), first)

    def test_name_that_is_not_utf8_is_read_and_shown_escaped(self):
        name = imagenet.wnids()[5].encode() + b"_caf\xe9.JPEG"
        with open(os.path.join(os.fsencode(self.root), name), "wb") as f:
            f.write(self.good)
        source = datasets.load(self.root)
        shown = f"{imagenet.wnids()[5]}_caf\\xe9.JPEG"
        self.assertIn(shown, list(source.known_ids))
        example = self.examples(source)[shown]
        self.assertEqual(example["image_bytes"], self.good)
        self.assertEqual(example["error"], b"")
        self.assertEqual(int(example["label"]), 5)
        self.assertEqual(source.path_of(shown), os.path.join(self.root, shown))

    def test_folder_path_is_normalised(self):
        config = datasets.DataConfig(self.root + "/")
        self.assertEqual(config.resolved().name, self.root)
        self.assertEqual(
            config.resolved(), datasets.DataConfig(self.root).resolved()
        )
        tfds_config = datasets.DataConfig("tfds:imagenet_v2")
        self.assertEqual(tfds_config.resolved(), tfds_config)


class FingerprintTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.root = self.create_tempdir().full_path
        self.paths = testing_utils.write_image_folder(self.root, [4, 2, 8])
        self.before = datasets.load(self.root).fingerprint

    def fingerprint(self, **kwargs):
        return datasets.load(self.root, **kwargs).fingerprint

    def test_same_files_same_fingerprint(self):
        source = datasets.load(self.root)
        list(source.dataset)  # Reading the images changes nothing.
        with open(os.path.join(self.root, "notes.txt"), "w") as f:
            f.write("not an image, not read")
        self.assertEqual(self.fingerprint(), self.before)
        self.assertEqual(datasets.split(source, "fit").fingerprint, self.before)

    def test_added_file_changes_it(self):
        testing_utils.write_image_folder(self.root, [6], seed=9)
        self.assertNotEqual(self.fingerprint(), self.before)

    def test_removed_file_changes_it(self):
        os.remove(self.paths[1])
        self.assertNotEqual(self.fingerprint(), self.before)

    def test_replaced_file_changes_it(self):
        image = testing_utils.random_image(40, 40, seed=5)
        with open(self.paths[0], "wb") as f:
            f.write(testing_utils.jpeg_bytes(image, quality=50))
        self.assertNotEqual(self.fingerprint(), self.before)

    def test_only_the_files_within_the_limit_count(self):
        first_two = self.fingerprint(limit=2)
        self.assertNotEqual(first_two, self.before)
        last = sorted(self.paths)[-1]
        os.remove(last)
        self.assertEqual(self.fingerprint(limit=2), first_two)

    def test_is_json_serialisable_as_is(self):
        # Resumed runs compare it with the config.json of the first run.
        self.assertEqual(json.loads(json.dumps(self.before)), self.before)


class DataConfigTest(tf.test.TestCase):
    def test_load_applies_limit_and_split(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, list(range(0, 20, 2)))
        config = datasets.DataConfig(root, limit=8, split="heldout")
        self.assertEqual(config.resolved().name, root)
        source = config.load()
        self.assertEqual(source.num_examples, 4)
        self.assertIn("heldout half, seed 0", source.description)
        whole = datasets.load(root, limit=8)
        expected = datasets.split(whole, "heldout", 0)
        self.assertEqual(
            [e["id"] for e in source.dataset.as_numpy_iterator()],
            [e["id"] for e in expected.dataset.as_numpy_iterator()],
        )
        self.assertEqual(source.fingerprint, whole.fingerprint)

    def test_unknown_split_is_an_error(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, [0, 2])
        with self.assertRaisesRegex(ValueError, "split must be one of"):
            datasets.DataConfig(root, split="test").load()


class SampleDownloadTest(tf.test.TestCase):
    def serve(self, folder):
        handler = functools.partial(
            http.server.SimpleHTTPRequestHandler, directory=folder
        )
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def test_download_extract_and_cache(self):
        served = self.create_tempdir().full_path
        image = testing_utils.jpeg_bytes(testing_utils.random_image())
        with zipfile.ZipFile(os.path.join(served, "master.zip"), "w") as z:
            z.writestr("imagenet-sample-images-master/README.md", "hi")
            for wnid in ("n01440764_tench", "n01443537_goldfish"):
                z.writestr(f"imagenet-sample-images-master/{wnid}.JPEG", image)
        cache = self.create_tempdir().full_path
        url = self.serve(served) + "/master.zip"
        folder = folders.sample_images_dir(url, cache_dir=cache)
        source = datasets.load(folder)
        self.assertEqual(source.num_examples, 2)
        labels = [int(e["label"]) for e in source.dataset.as_numpy_iterator()]
        self.assertEqual(labels, [0, 1])
        # Cached: a second call needs no server.
        os.remove(os.path.join(served, "master.zip"))
        self.assertEqual(
            folders.sample_images_dir(url, cache_dir=cache), folder
        )

    def test_offline_says_how_to_point_data_at_a_folder(self):
        cache = self.create_tempdir().full_path
        with self.assertRaisesRegex(ConnectionError, "DATA=") as e:
            folders.sample_images_dir(
                "http://127.0.0.1:9/nothing.zip", cache_dir=cache
            )
        self.assertNotIn("\n", str(e.exception))


class SelectTest(tf.test.TestCase):
    def test_select_without_read_indices_filters_the_covering_range(self):
        def read(start, stop):
            index = tf.data.Dataset.range(start, 20 if stop is None else stop)
            return index.map(lambda i: {"index": i})

        source = datasets.Source(read, 20, "range")
        selected = source.select([9, 2, 5, 2])
        self.assertEqual([int(e["index"]) for e in selected], [2, 5, 9])
        self.assertEmpty(list(source.select([])))
