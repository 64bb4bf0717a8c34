import dataclasses
import json
import os

import tensorflow as tf

from compression_helps.engine import ranking
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.jobs import crossfit
from deepn_jpeg.jpeg import tables
from tests import testing_utils


class CrossfitTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, list(range(12)))
        self.model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path, num_classes=10
        )

    def config(self, **kwargs):
        defaults = dict(
            model=registry.ModelConfig(self.model, weights=None),
            data=datasets.DataConfig(self.data, split_seed=5),
            folds=3,
            methods=("monotone", "sensitivity", "fit-sensitivity"),
            encoders=("libjpeg", "mozjpeg"),
            qualities=(90, 50, 10),
            fit_images=5,
            fit_trials=2,
            batch_size=4,
            bootstrap=20,
        )
        return crossfit.Config(**{**defaults, **kwargs})

    def test_every_image_is_evaluated_once_by_tables_made_without_it(self):
        workdir = self.create_tempdir().full_path
        result = crossfit.run(self.config(), workdir, verbose=False)
        self.assertEqual(result["n_images"], 12)
        self.assertEqual(result["folds_done"], 3)
        predictions = ranking.Predictions.load(
            os.path.join(workdir, "predictions.npz")
        )
        all_ids = [
            e["id"].decode()
            for e in datasets.load(self.data).dataset.as_numpy_iterator()
        ]
        self.assertCountEqual(predictions.ids.tolist(), all_ids)
        source = datasets.load(self.data)
        for fold in (1, 2, 3):
            root = os.path.join(workdir, f"fold{fold}")
            heldout = {
                e["id"].decode()
                for e in datasets.split(
                    source, f"heldout:{fold}/3", 5
                ).dataset.as_numpy_iterator()
            }
            # The designs read only the other folds: their configs say so,
            # and the evaluation read only this fold.
            for step in ("design", "sensitivity", "fit"):
                with open(os.path.join(root, step, "config.json")) as f:
                    split = json.load(f)["settings"]["data"]["split"]
                self.assertEqual(split, f"fit:{fold}/3")
            evaluated = ranking.Predictions.load(
                os.path.join(root, "eval", "predictions.npz")
            )
            self.assertCountEqual(evaluated.ids.tolist(), heldout)
            # A fold's tables are the ones its evaluation used.
            luma, _ = tables.load_json(
                os.path.join(root, "sensitivity", "qtables_sensitivity.json")
            )
            self.assertAllEqual(
                result["folds"][fold - 1]["tables"]["sensitivity"]["luma"], luma
            )
        # Every curve with both encoders, and a verdict line for each.
        curves = set(result["curves"])
        for name in ("jpeg", "monotone", "sensitivity", "fit-sensitivity-qf50"):
            self.assertIn(name, curves)
            self.assertIn(f"{name}@mozjpeg", curves)
        verdict_curves = {v["curve"] for v in result["verdict"]}
        self.assertEqual(verdict_curves, curves - {"jpeg", "original"})
        self.assertTrue(os.path.exists(os.path.join(workdir, "crossfit.png")))

    def test_resume_reuses_the_finished_folds(self):
        workdir = self.create_tempdir().full_path
        config = self.config(methods=("monotone",), encoders=("libjpeg",))
        first = crossfit.run(config, workdir, verbose=False)
        shards = os.path.join(workdir, "fold1", "eval", "shards")

        def written():
            return {
                name: os.stat(os.path.join(shards, name)).st_mtime_ns
                for name in os.listdir(shards)
            }

        before = written()
        self.assertNotEmpty(before)
        again = crossfit.run(config, workdir, resume=True, verbose=False)
        self.assertEqual(written(), before)  # Nothing evaluated again.
        self.assertEqual(first["verdict"], again["verdict"])
        # Report settings may change on resume: only the verdict is redone.
        wider = crossfit.run(
            dataclasses.replace(config, band_drops=(2.0, 6.0)),
            workdir,
            resume=True,
            verbose=False,
        )
        self.assertEqual(written(), before)
        top1 = wider["curves"]["original"][0]["top1"]
        self.assertEqual(wider["verdict"][0]["band"], [top1 - 6, top1 - 2])
        with self.assertRaisesRegex(ValueError, "folds"):
            crossfit.run(
                self.config(methods=("monotone",), folds=2),
                workdir,
                resume=True,
                verbose=False,
            )

    def test_a_split_data_config_is_refused(self):
        with self.assertRaisesRegex(ValueError, "split must be 'all'"):
            crossfit.check_config(
                self.config(data=datasets.DataConfig(self.data, split="fit"))
            )
        with self.assertRaisesRegex(ValueError, "method"):
            crossfit.check_config(self.config(methods=("best",)))
