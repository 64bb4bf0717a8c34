import json
import os
from unittest import mock

import tensorflow as tf

from compression_helps.engine import (
    candidate_store,
    candidates,
    evaluate,
    ranking,
)
from compression_helps.models import registry
from compression_helps.selection import runner
from compression_helps.sources import datasets
from tests import testing_utils

QUALITIES = (90, 10)


class StoreTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, [0, 1, 2, 3, 4])
        # Undecodable: left out of the store, found missing and diagnosed.
        with open(os.path.join(self.data, "n01440764_bad.JPEG"), "wb") as f:
            f.write(b"not a jpeg")
        self.config = datasets.DataConfig(self.data).resolved()
        self.source = self.config.load()
        self.codecs = candidates.as_codecs(QUALITIES)
        self.classifier = registry.load_classifier(
            testing_utils.tiny_model_file(self.create_tempdir().full_path)
        )

    def open_store(self, root=None, codecs=None, source=None):
        root = root or os.path.join(self.create_tempdir().full_path, "store")
        source = source or self.source
        key = candidate_store.store_key(
            codecs or self.codecs, self.config, source
        )
        return candidate_store.Store.open(root, key, source.count())

    def predict(self, store=None):
        return evaluate.predict(
            self.classifier,
            self.source,
            QUALITIES,  # Codecs made here, by the encoder of the moment.
            batch_size=2,
            shard_size=3,
            verbose=False,
            store=store,
        )

    def test_stored_candidates_give_the_same_predictions(self):
        want, want_skipped = self.predict()
        store = self.open_store()
        self.assertEqual(store.fill(self.source, self.codecs, False), 6)
        got, got_skipped = self.predict(store)
        self.assertEqual(got_skipped, want_skipped)
        self.assertEqual([s.id for s in got_skipped], ["n01440764_bad.JPEG"])
        for name, array in want.to_arrays().items():
            self.assertAllEqual(getattr(got, name), array, msg=name)

    def test_records_hold_the_original_and_the_candidate_files(self):
        store = self.open_store()
        store.fill(self.source, self.codecs, False)
        records = list(store.read(0, 3).as_numpy_iterator())
        # Index 1, the undecodable file, is left out.
        self.assertEqual([r["index"] for r in records], [0, 2])
        for record in records:
            path = os.path.join(self.data, record["id"].decode())
            with open(path, "rb") as f:
                original = f.read()
            self.assertEqual(record["files"][0], original)
            decoded = candidates.decode_image(original)
            for codec, stored in zip(
                self.codecs, record["files"][1:], strict=True
            ):
                self.assertEqual(stored, codec.encode(decoded).numpy())
            self.assertEqual(record["num_pixels"], 32 * 48)

    def test_a_filled_store_is_read_without_any_jpeg_encoding(self):
        store = self.open_store()
        store.fill(self.source, self.codecs, False)
        want, _ = self.predict(store)
        again = self.open_store(store.root)
        with mock.patch.object(
            tf.io, "encode_jpeg", side_effect=AssertionError("encoded")
        ):
            with self.assertRaisesRegex(AssertionError, "encoded"):
                self.predict()  # Encoding would be noticed.
            codecs = candidates.as_codecs(QUALITIES)
            self.assertEqual(again.fill(self.source, codecs, False), 0)
            got, _ = self.predict(again)
        for name, array in want.to_arrays().items():
            self.assertAllEqual(getattr(got, name), array, msg=name)

    def test_a_store_of_another_key_is_refused_in_one_line(self):
        store = self.open_store()
        store.fill(self.source, self.codecs, False)
        other_codecs = candidates.as_codecs((80, 10))
        with self.assertRaisesRegex(ValueError, "other candidates") as e:
            self.open_store(store.root, codecs=other_codecs)
        self.assertIn(store.root, str(e.exception))
        self.assertNotIn("\n", str(e.exception))
        # Another TensorFlow (so libjpeg) wrote it.
        path = os.path.join(store.root, candidate_store.KEY_FILE)
        with open(path) as f:
            record = json.load(f)
        record["key"]["tensorflow"] = "1.0.0"
        with open(path, "w") as f:
            json.dump(record, f)
        with self.assertRaisesRegex(ValueError, "other tensorflow;"):
            self.open_store(store.root)
        # Other images: the data's fingerprint differs.
        testing_utils.write_image_folder(self.data, [7], seed=9)
        with self.assertRaisesRegex(ValueError, r"fingerprint\.files"):
            self.open_store(store.root, source=self.config.load())

    def test_a_folder_of_other_files_is_refused(self):
        folder = self.create_tempdir().full_path
        with open(os.path.join(folder, "mine.txt"), "w") as f:
            f.write("mine")
        with self.assertRaisesRegex(ValueError, "not a candidate store"):
            self.open_store(folder)
        self.assertEqual(os.listdir(folder), ["mine.txt"])

    def test_an_interrupted_fill_leaves_only_whole_shards(self):
        store = self.open_store()
        real = candidate_store._serialize
        calls = []

        def serialize_then_die(record):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(record)

        with mock.patch.object(
            candidate_store, "_serialize", serialize_then_die
        ):
            with self.assertRaises(KeyboardInterrupt):
                store.fill(self.source, self.codecs, False)
        self.assertEqual(os.listdir(store.root), [candidate_store.KEY_FILE])
        self.assertEqual(store.missing(), [(0, 6)])
        with self.assertRaisesRegex(ValueError, "not filled"):
            store.read()
        store.fill(self.source, self.codecs, False)
        self.assertEqual(store.missing(), [])
        self.assertLen(list(store.read()), 5)

    def test_other_codecs_than_the_stores_are_refused(self):
        store = self.open_store()
        with self.assertRaisesRegex(ValueError, "candidate store of"):
            evaluate.predict(
                self.classifier, self.source, (50,), verbose=False, store=store
            )
        paper = candidates.Codec("paper", 50, self.codecs[0].encode)
        with self.assertRaisesRegex(ValueError, "standard JPEG candidates"):
            self.open_store(codecs=(paper,))


class RunSelectorsWithStoreTest(tf.test.TestCase):
    def test_second_run_reads_the_store_and_gives_the_same_predictions(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [0, 1, 2])
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        store = os.path.join(self.create_tempdir().full_path, "store")

        def run(candidates_dir):
            workdir = os.path.join(self.create_tempdir().full_path, "run")
            config = runner.Config(
                model=registry.ModelConfig(model, None),
                data=datasets.DataConfig(data),
                batch_size=2,
                qualities=QUALITIES,
                candidates=candidates_dir,
            )
            runner.run(config, workdir, verbose=False)
            path = os.path.join(workdir, "tiny", ranking.PREDICTIONS_FILE)
            return ranking.Predictions.load(path)

        want = run(None)
        first = run(store)
        with mock.patch.object(
            tf.io, "encode_jpeg", side_effect=AssertionError("encoded")
        ):
            second = run(store)
        for name, array in want.to_arrays().items():
            self.assertAllEqual(getattr(first, name), array, msg=name)
            self.assertAllEqual(getattr(second, name), array, msg=name)
