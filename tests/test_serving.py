import os
import resource
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from compression_helps.models import registry
from compression_helps.multi_input import network, serving, train
from compression_helps.sources import datasets, guard
from tests import testing_utils

QUALITIES = (90, 10)  # V = 3: keeps the tests fast.
NAMES = ("original", "qf90", "qf10")
TINY_SIZE = 16


def random_inputs(batch):
    return testing_utils.random_uint8_inputs(TINY_SIZE, NAMES, batch)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ExportTest(tf.test.TestCase):
    def _export(self, limits=None):
        limits = limits or guard.Limits()
        classifier = registry.load_classifier(
            testing_utils.tiny_model_file(self.create_tempdir().full_path)
        )
        model = network.build_multi_input_model(
            classifier, QUALITIES, head_init="random", seed=0
        )
        export_dir = os.path.join(self.create_tempdir().full_path, "saved")
        serving.export_saved_model(
            model, classifier.resize, export_dir, QUALITIES, limits
        )
        return model, classifier, tf.saved_model.load(export_dir)

    def _expected(self, model, classifier, files):
        """What the training and evaluation pipeline feeds the model."""
        dataset = network.make_dataset(
            tf.data.Dataset.from_tensor_slices(
                {
                    "image_bytes": tf.constant(files),
                    "label": tf.zeros(len(files), tf.int32),
                }
            ),
            classifier.resize,
            QUALITIES,
            batch_size=len(files),
        )
        return model.predict_on_batch(next(iter(dataset))[0])

    def _assert_bytes_signature_matches(self, model, classifier, loaded, files):
        want = self._expected(model, classifier, files)
        image_bytes = tf.constant(files)
        for outputs in (
            loaded.serve_bytes(image_bytes),
            loaded.signatures["serve_bytes"](image_bytes=image_bytes),
        ):
            self.assertCountEqual(outputs, ["probabilities", "status"])
            self.assertAllClose(outputs["probabilities"], want, atol=1e-6)
            self.assertAllEqual(outputs["status"], [b""] * len(files))

    def test_both_signatures_match_the_keras_model(self):
        model, classifier, loaded = self._export()
        self.assertCountEqual(
            loaded.signatures.keys(),
            ["serving_default", "serve", "serve_bytes"],
        )
        inputs = random_inputs(3)
        want = model.predict_on_batch(inputs)
        self.assertAllClose(loaded.serve(inputs), want, atol=1e-6)
        outputs = loaded.signatures["serving_default"](
            **{k: tf.constant(v) for k, v in inputs.items()}
        )
        self.assertEqual(list(outputs), ["output_0"])  # As documented.
        self.assertAllClose(outputs["output_0"], want, atol=1e-6)
        # Images of different sizes in one batch.
        files = [
            testing_utils.jpeg_bytes(
                testing_utils.random_image(24 + 8 * i, 40, seed=i)
            )
            for i in range(3)
        ]
        self._assert_bytes_signature_matches(model, classifier, loaded, files)

    def test_bad_files_get_a_status_and_the_others_are_served(self):
        good = [
            testing_utils.jpeg_bytes(testing_utils.random_image(seed=i))
            for i in range(2)
        ]
        large = testing_utils.jpeg_bytes(
            np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
        )
        limits = guard.Limits(max_file_bytes=len(large) - 1)
        self.assertLess(max(map(len, good)), limits.max_file_bytes)
        model, classifier, loaded = self._export(limits)
        files = [
            good[0],
            b"not an image",
            testing_utils.image_claiming(
                "jpeg", 13000, 13000
            ),  # Decoded: +3.4 GB, 11 s.
            b"\xff\xd8\xff\xe0 a broken JPEG header",
            testing_utils.image_claiming("png", 13000, 13000),
            large,
            good[1],
        ]
        rss = peak_rss_bytes()
        outputs = loaded.signatures["serve_bytes"](
            image_bytes=tf.constant(files)
        )
        self.assertLess(peak_rss_bytes() - rss, 500 << 20)
        self.assertEqual(
            [s.decode() for s in outputs["status"].numpy()],
            [
                "",
                serving.UNDECODABLE,
                "too many pixels: 13000x13000 = 169.0 MP > 89.5 MP limit",
                serving.UNDECODABLE,
                "too many pixels: 13000x13000 = 169.0 MP > 89.5 MP limit",
                f"file too large: {len(large)} bytes > {len(large) - 1}",
                "",
            ],
        )
        probabilities = outputs["probabilities"].numpy()
        self.assertEqual(probabilities.shape, (len(files), 1000))
        want = self._expected(model, classifier, good)
        self.assertAllClose(probabilities[[0, -1]], want, atol=1e-6)
        self.assertAllEqual(probabilities[1:-1], np.zeros((5, 1000)))

    def test_empty_and_all_refused_batches(self):
        _, _, loaded = self._export()
        for files, status in (([], []), ([b"x"], [serving.UNDECODABLE])):
            outputs = loaded.serve_bytes(tf.constant(files, tf.string))
            self.assertEqual(outputs["probabilities"].shape, (len(files), 1000))
            self.assertAllEqual(
                outputs["probabilities"], np.zeros((len(files), 1000))
            )
            self.assertAllEqual(outputs["status"], status)

    def test_bytes_signature_on_real_jpegs(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        model, classifier, loaded = self._export()
        files = [
            tf.io.read_file(path).numpy()
            for path in testing_utils.sample_paths(4)
        ]
        self._assert_bytes_signature_matches(model, classifier, loaded, files)


class ExportFromWorkdirTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        data = os.path.join(cls.root, "images")
        os.makedirs(data, exist_ok=True)
        testing_utils.write_image_folder(data, [0, 2, 4, 6])
        cls.config = train.Config(
            model=registry.ModelConfig(testing_utils.tiny_model_file(cls.root)),
            data=datasets.DataConfig(data),
            qualities=QUALITIES,
            num_eval=1,
            batch_size=2,
            epochs=1,
        )
        cls.workdir = os.path.join(cls.root, "run")
        train.train_and_evaluate(cls.config, cls.workdir, verbose=False)
        cls.model = keras.saving.load_model(
            os.path.join(cls.workdir, "model.keras")
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root)
        super().tearDownClass()

    def _assert_serves_the_model(self, export_dir):
        loaded = tf.saved_model.load(export_dir)
        inputs = random_inputs(2)
        self.assertAllClose(
            loaded.serve(inputs), self.model.predict_on_batch(inputs), atol=1e-6
        )

    def test_default_export_is_part_of_the_run(self):
        export_dir = serving.export_from_workdir(self.workdir)
        self.assertEqual(export_dir, os.path.join(self.workdir, "saved_model"))
        self._assert_serves_the_model(export_dir)
        # Again: the earlier export is replaced.
        self.assertEqual(serving.export_from_workdir(self.workdir), export_dir)
        self._assert_serves_the_model(export_dir)
        # A fresh training run there removes it with the rest of the run.
        workdir = self.create_tempdir().full_path
        train.train_and_evaluate(self.config, workdir, verbose=False)
        export_dir = serving.export_from_workdir(workdir)
        train.train_and_evaluate(self.config, workdir, verbose=False)
        self.assertFalse(os.path.exists(export_dir))

    def test_refuses_folders_with_other_files(self):
        folder = self.create_tempdir().full_path
        with open(os.path.join(folder, "notes.txt"), "w") as f:
            f.write("mine")
        for export_dir, message in [
            (folder, "not a SavedModel"),
            (os.path.join(self.workdir, "logs"), "not a SavedModel"),
            (os.path.join(self.workdir, "model.keras"), "not a folder"),
            (self.workdir, "is the workdir"),
        ]:
            with self.assertRaisesRegex(ValueError, message):
                serving.export_from_workdir(self.workdir, export_dir)
        self.assertEqual(os.listdir(folder), ["notes.txt"])
        self.assertTrue(
            os.path.isfile(os.path.join(self.workdir, "model.keras"))
        )

    def test_without_a_trained_model(self):
        with self.assertRaisesRegex(FileNotFoundError, "no trained model"):
            serving.export_from_workdir(self.create_tempdir().full_path)

    def test_script_exports_outside_the_workdir(self):
        export_dir = os.path.join(self.create_tempdir().full_path, "exported")
        result = testing_utils.run_module(
            "experiments.export_savedmodel",
            f"--workdir={self.workdir}",
            f"--export_dir={export_dir}",
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip().splitlines()[-1], export_dir)
        self._assert_serves_the_model(export_dir)
        loaded = tf.saved_model.load(export_dir)  # Alive while it runs.
        # A SavedModel loaded in another process than the one that wrote
        # it: its checks and tf.data pipeline are graph ops, no Python.
        outputs = loaded.serve_bytes(
            tf.constant(
                [
                    testing_utils.jpeg_bytes(testing_utils.random_image()),
                    testing_utils.image_claiming("jpeg", 13000, 13000),
                ]
            )
        )
        self.assertAllClose(
            np.sum(outputs["probabilities"], -1), [1.0, 0.0], atol=1e-5
        )
        self.assertEqual(outputs["status"][0], b"")
        self.assertStartsWith(
            outputs["status"][1].numpy().decode(), "too many pixels"
        )


if __name__ == "__main__":
    tf.test.main()
