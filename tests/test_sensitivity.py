import dataclasses
import os

import tensorflow as tf
from absl.testing import parameterized

from compression_helps.core import files, rundir
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.jobs import sensitivity
from deepn_jpeg.jpeg import tables
from tests import testing_utils


class RunTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, [0, 0, 2, 4, 6])
        self.model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path
        )
        self.workdir = os.path.join(self.create_tempdir().full_path, "run")

    def config(self, **changes):
        return sensitivity.Config(
            model=registry.ModelConfig(self.model, weights=None),
            data=datasets.DataConfig(self.data),
            batch_size=2,
            shard_size=2,
            **changes,
        )

    def test_run_writes_sensitivity_and_tables_and_resumes(self):
        result = sensitivity.run(self.config(), self.workdir, verbose=False)
        self.assertEqual(result.sensitivity.num_images, 5)
        saved = sensitivity.BandSensitivity.load(
            os.path.join(self.workdir, sensitivity.SENSITIVITY_FILE)
        )
        self.assertAllEqual(saved.sums_sq, result.sensitivity.sums_sq)
        self.assertGreater(saved.sums_sq.min(), 0)
        path = os.path.join(
            self.workdir, tables.qtables_filename("sensitivity", "json")
        )
        luma, chroma = tables.load_json(path)
        self.assertAllEqual(luma, result.qtables[0])
        self.assertAllEqual(chroma, result.qtables[1])
        self.assertAllEqual(
            (luma, chroma), sensitivity.qtables(result.sensitivity)
        )
        # The tables are for the chroma grid they were measured on.
        self.assertEqual(files.read_json(path)["subsampling"], "4:2:0")
        with open(path.replace(".json", ".txt")) as f:
            self.assertAllEqual(tables.read_cjpeg_qtables(f.read())[0], luma)
        self.assertIn("luma table | JPEG luma table, QF 50:", result.summary)
        self.assertEqual(rundir.count_errors(self.workdir), {})

        # Resume: finished shards are read back; a lost one is computed
        # again, to the same sums (per-image probes, padded batches).
        shards = sorted(os.listdir(os.path.join(self.workdir, "shards")))
        self.assertLen(shards, 3)
        os.remove(os.path.join(self.workdir, "shards", shards[1]))
        resumed = sensitivity.run(
            self.config(), self.workdir, resume=True, verbose=False
        )
        self.assertAllClose(
            resumed.sensitivity.sums_sq, result.sensitivity.sums_sq, rtol=1e-6
        )
        with self.assertRaisesRegex(ValueError, "probes"):
            sensitivity.run(
                self.config(probes=2), self.workdir, resume=True, verbose=False
            )

    def test_xent_skips_unlabelled_images(self):
        with open(os.path.join(self.data, "nolabel.JPEG"), "wb") as f:
            f.write(testing_utils.jpeg_bytes(testing_utils.random_image()))
        result = sensitivity.run(
            self.config(loss="xent"), self.workdir, verbose=False
        )
        self.assertEqual(result.sensitivity.num_images, 5)
        self.assertEqual([s.id for s in result.skipped], ["nolabel.JPEG"])
        self.assertIn("no ImageNet label", result.skipped[0].reason)

    @parameterized.named_parameters(
        ("loss", {"loss": "mse"}, "loss"),
        ("probes", {"probes": 0}, "probes"),
        ("upsampling", {"upsampling": "cubic"}, "upsampling"),
        ("chroma", {"chroma_subsampling": "4:2:2"}, "chroma_subsampling"),
        ("shard_size", {"shard_size": 0}, "shard_size"),
        ("seed", {"seed": -1}, "seed"),
        ("per_class", {"per_class": 0}, "per_class"),
    )
    def test_bad_settings_are_refused_before_any_work(self, change, message):
        config = dataclasses.replace(self.config(), **change)
        with self.assertRaisesRegex(ValueError, message):
            sensitivity.run(config, self.workdir, verbose=False)
        self.assertFalse(os.path.exists(self.workdir))

    def test_script_prints_the_tables(self):
        # A process of its own: the script's flags would clash with the
        # other scripts' in this one.
        result = testing_utils.run_module(
            "experiments.measure_sensitivity",
            f"--model={self.model}",
            "--weights=none",
            f"--data={self.data}",
            "--limit=2",
            f"--workdir={self.workdir}",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("chroma table | JPEG chroma table, QF 50:", result.stdout)
        self.assertIn("from 2 images", result.stdout)
