import functools
import http.server
import json
import os
import threading
import zipfile

import tensorflow as tf
import tensorflow_datasets as tfds

from compression_helps import candidates, datasets, splits
from tests import testing_utils


class ClassIndexTest(tf.test.TestCase):
    def test_index_is_sorted_wnid_order(self):
        wnids = datasets.wnids()
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
        examples = datasets.folder_examples(root)
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
        self.assertEqual(splits.split(source, "fit").fingerprint, self.before)

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
        self.assertIs(config.resolved().name, root)
        source = config.load()
        self.assertEqual(source.num_examples, 4)
        self.assertIn("heldout half, seed 0", source.description)
        whole = datasets.load(root, limit=8)
        expected = splits.split(whole, "heldout", 0)
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


class TfdsTest(tf.test.TestCase):
    def test_imagenet2012_validation_without_download(self):
        with tfds.testing.mock_data(num_examples=4):
            source = datasets.load("tfds:imagenet2012:validation")
            examples = list(source.dataset.take(4).as_numpy_iterator())
        self.assertLen(examples, 4)
        self.assertEqual(source.fingerprint["tfds"], "imagenet2012")
        self.assertEqual(source.fingerprint["split"], "validation")
        self.assertIn("version", source.fingerprint)
        for e in examples:
            self.assertBetween(int(e["label"]), 0, 999)
            self.assertNotEmpty(e["id"])
            # The encoded file, decodable by the candidate pipeline.
            image = candidates.decode_image(e["image_bytes"])
            self.assertEqual(image.shape[-1], 3)

    def test_imagenet_v2_default_split_and_limit(self):
        with tfds.testing.mock_data(num_examples=6):
            source = datasets.load("tfds:imagenet_v2", limit=3)
            self.assertIn("imagenet_v2:test[:3]", source.description)
            examples = list(source.dataset.as_numpy_iterator())
        self.assertNotEmpty(examples)


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
        folder = datasets.sample_images_dir(url, cache_dir=cache)
        source = datasets.load(folder)
        self.assertEqual(source.num_examples, 2)
        labels = [int(e["label"]) for e in source.dataset.as_numpy_iterator()]
        self.assertEqual(labels, [0, 1])
        # Cached: a second call needs no server.
        os.remove(os.path.join(served, "master.zip"))
        self.assertEqual(
            datasets.sample_images_dir(url, cache_dir=cache), folder
        )

    def test_offline_says_how_to_point_data_at_a_folder(self):
        cache = self.create_tempdir().full_path
        with self.assertRaisesRegex(ConnectionError, "DATA=") as e:
            datasets.sample_images_dir(
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
