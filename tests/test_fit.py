import json
import os
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.engine import evaluate, in_memory, ranking
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.analysis import families, search, statistics
from deepn_jpeg.jobs import fit, rate_accuracy, report
from deepn_jpeg.jpeg import codec, ladder, tables
from tests import testing_utils


def tiny_stats():
    images = [testing_utils.random_image(seed=i) for i in range(3)]
    dataset = tf.data.Dataset.from_tensor_slices(
        {
            "image_bytes": [testing_utils.jpeg_bytes(i) for i in images],
            "label": [0, 1, 2],
        }
    )
    return statistics.compute(dataset)


def read_log(workdir):
    with open(os.path.join(workdir, fit.TRIALS_FILE)) as f:
        return [json.loads(line) for line in f]


def without_seconds(value):
    """`value` without the "seconds" of its trial records."""
    if isinstance(value, dict):
        return {
            k: without_seconds(v) for k, v in value.items() if k != "seconds"
        }
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def ten_class_model(folder):
    """A random model whose ranks of labels 0-9 vary from image to image."""
    # Seed 1: a model whose top-1 on the fit half is neither 0 nor 100 %.
    path = testing_utils.tiny_model_file(folder, num_classes=10, seed=1)
    return registry.ModelConfig(path, weights=None)


class InMemoryImagesTest(tf.test.TestCase):
    def test_equals_the_streaming_evaluation_and_records_bad_images(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [0, 1, 2, 3, 4, 5, 6, 7])
        with open(os.path.join(data, "n01440764_empty.JPEG"), "wb"):
            pass
        with open(os.path.join(data, "no_label.JPEG"), "wb") as f:
            f.write(testing_utils.jpeg_bytes(testing_utils.random_image()))
        source = datasets.load(data)
        classifier = ten_class_model(self.create_tempdir().full_path).load()
        luma, chroma = tables.standard_qtables(50)
        codecs = [
            ladder.table_codec("t", 50, luma * 2, chroma, "4:2:0"),
            70,
        ]

        images = in_memory.InMemoryImages(classifier, source, batch_size=3)
        got = images.predict(codecs)
        want, skipped = evaluate.predict(
            classifier, source, codecs, batch_size=3, verbose=False
        )
        self.assertEqual(images.skipped, skipped)
        self.assertEqual(
            [s.kind for s in skipped], ["empty file", "no ImageNet label"]
        )
        for name in ("ranks", "sizes", "topk", "labels", "ids", "curves"):
            self.assertAllEqual(getattr(got, name), getattr(want, name))
        self.assertAllClose(got.topk_probs, want.topk_probs)
        # The ranks differ between images and candidates: a real check.
        self.assertGreater(len(np.unique(want.ranks)), 2)
        # Encoding only gives the same sizes; the codecs alone, too.
        self.assertAllEqual(images.sizes(codecs), want.sizes[:, 1:])
        alone = images.predict(codecs[:1], with_original=False)
        self.assertAllEqual(alone.ranks[:, 0], want.ranks[:, 1])
        self.assertEqual(ranking.accuracy(alone, 0), ranking.accuracy(want, 1))


class RunTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, list(range(10)) * 2)
        self.model = ten_class_model(self.create_tempdir().full_path)

    def config(self, **kwargs):
        defaults = dict(
            model=self.model,
            data=datasets.DataConfig(self.data),
            families=("standard",),
            budget_qualities=(30,),
            max_trials=5,
            batch_size=4,
        )
        return fit.Config(**{**defaults, **kwargs})

    def test_fits_logs_and_never_loses_to_the_start(self):
        workdir = self.create_tempdir().full_path
        # Hand-made "sensitivity" tables: finer chroma, flatter luma.
        sensitivity = os.path.join(self.create_tempdir(), "qtables_s.json")
        luma, chroma = tables.standard_qtables(50)
        tables.save_json(sensitivity, (luma + 40) // 2, chroma // 3 + 1)
        config = self.config(
            families=families.FAMILIES,
            budget_qualities=(50, 20),
            sensitivity_tables=sensitivity,
        )
        summary = fit.run(config, workdir, verbose=False)

        # Only the fit half of the images is used.
        self.assertEqual(summary["n_images"], 10)
        # Every trial is logged with its parameters, bytes and accuracy.
        searched = [t for t in read_log(workdir) if "family" in t]
        self.assertLen(searched, 3 * 2 * config.max_trials)
        for key in ("params", "bytes", "top1", "top5", "mean_prob"):
            self.assertIn(key, searched[0])
        for budget in summary["budgets"]:
            for fitted in budget["fitted"]:
                best, start = fitted["best"], fitted["start"]
                family = families.make_family(
                    fitted["family"],
                    tiny_stats(),
                    tables.load_json(sensitivity),
                )
                self.assertEqual(fitted["num_trials"], config.max_trials)
                self.assertAllClose(
                    list(start["params"].values()), family.start
                )
                # Same budget; never a lower score than the unfitted table.
                self.assertLessEqual(best["bytes"], budget["jpeg"]["bytes"])
                self.assertLessEqual(start["bytes"], budget["jpeg"]["bytes"])
                self.assertGreaterEqual(
                    search.score(best, config.tie_weight),
                    search.score(start, config.tie_weight),
                )
                # The exported tables are the best trial's, in both formats.
                path = os.path.join(workdir, f"qtables_{fitted['name']}")
                luma, chroma = tables.load_json(path + ".json")
                self.assertAllEqual(luma, best["luma"])
                with open(path + ".txt") as f:
                    read = tables.read_cjpeg_qtables(f.read())
                self.assertAllEqual(read[1], chroma)
        # The standard family starts at standard JPEG itself, and the
        # sensitivity family at the given tables (scaled to the budget).
        start = summary["budgets"][0]["fitted"][1]["start"]
        self.assertEqual(start["bytes"], summary["budgets"][0]["jpeg"]["bytes"])
        start = summary["budgets"][0]["fitted"][2]["start"]
        self.assertAllClose(
            np.array(start["chroma"]) / np.array(start["luma"]),
            tables.load_json(sensitivity)[1] / tables.load_json(sensitivity)[0],
            rtol=0.2,
            atol=0.1,
        )
        self.assertIn("fit-plm-qf20", report.fit_summary_text(summary))
        with open(os.path.join(workdir, "config.json")) as f:
            self.assertEqual(json.load(f)["settings"]["data"]["split"], "fit")

    def test_trials_equal_what_eval_deepn_jpeg_reports(self):
        fitted = self.create_tempdir().full_path
        config = self.config(
            data=datasets.DataConfig(self.data, split_seed=1),
            budget_qualities=(50,),
            max_trials=4,
        )
        summary = fit.run(config, fitted, verbose=False)
        # The fitted tables are at quality 50 of eval_deepn_jpeg's grid.
        result = rate_accuracy.run(
            rate_accuracy.Config(
                tables=fitted,
                model=self.model,
                data=datasets.DataConfig(self.data, split="fit", split_seed=1),
                qualities=(50,),
                batch_size=4,
                bootstrap=0,
            ),
            self.create_tempdir().full_path,
            verbose=False,
        ).report
        budget = summary["budgets"][0]
        pairs = [
            (summary["original"], result["curves"]["original"][0]),
            (budget["jpeg"], result["curves"]["jpeg"][0]),
            (
                budget["fitted"][0]["best"],
                result["curves"]["fit-standard-qf50"][0],
            ),
        ]
        for trial, point in pairs:
            for key in ("bytes", "top1", "top5"):
                self.assertEqual(trial[key], point[key], key)
        self.assertEqual(result["n_images"], summary["n_images"])
        # Accuracies strictly between 0 and 100: the comparison can fail.
        for key in ("top1", "top5"):
            self.assertTrue(any(0 < t[key] < 100 for t, _ in pairs), key)

    def test_resume_replays_the_log_and_goes_on(self):
        workdir = self.create_tempdir().full_path
        config = self.config()
        summary = fit.run(config, workdir, verbose=False)
        logged = read_log(workdir)

        # A finished run replays everything: no file written, no model call.
        with (
            # Every file, from any pipeline, is written here.
            mock.patch.object(codec, "_write", wraps=codec._write) as encode,
            mock.patch.object(in_memory.InMemoryImages, "predict") as predict,
        ):
            again = fit.run(config, workdir, resume=True, verbose=False)
        self.assertEqual(encode.call_count, 0)
        self.assertEqual(predict.call_count, 0)
        self.assertEqual(again["trials_computed"], 0)
        self.assertEqual(again["budgets"], summary["budgets"])

        # Cut after three lines, the last one half written: resuming
        # computes only the missing trials and ends where the full run did.
        path = os.path.join(workdir, fit.TRIALS_FILE)
        with open(path) as f:
            lines = f.readlines()
        with open(path, "w") as f:
            f.writelines(lines[:3] + [lines[3][:20]])
        resumed = fit.run(config, workdir, resume=True, verbose=False)
        self.assertEqual(resumed["trials_computed"], len(logged) - 3)
        # The same trials with the same results (only "seconds" differ).
        self.assertEqual(
            without_seconds(resumed["budgets"]),
            without_seconds(summary["budgets"]),
        )

        # Without resume the log starts over.
        fit.run(config, workdir, verbose=False)
        self.assertLen(read_log(workdir), len(logged))
        # A longer search resumes: the logged trials replay, only the new
        # ones are computed. Other settings are refused.
        longer = fit.run(
            self.config(max_trials=7), workdir, resume=True, verbose=False
        )
        self.assertEqual(longer["trials_computed"], 2)
        with self.assertRaisesRegex(ValueError, "budget_qualities"):
            fit.run(
                self.config(budget_qualities=(40,)),
                workdir,
                resume=True,
                verbose=False,
            )

    @parameterized.named_parameters(
        ("family", dict(families=("png",)), "family must be one of"),
        ("no_family", dict(families=()), "no table family"),
        ("trials", dict(max_trials=0), "max_trials must be >= 1"),
        ("budget", dict(budget_qualities=(0,)), r"must be in \[1, 100\]"),
        ("tolerance", dict(budget_tolerance=1.5), "budget_tolerance"),
        ("tie_weight", dict(tie_weight=-1.0), "tie_weight"),
        ("subsampling", dict(subsampling="4:1:1"), "subsampling must be"),
        ("batch", dict(batch_size=0), "batch_size must be >= 1, got 0"),
        ("negative_batch", dict(batch_size=-2), "batch_size must be >= 1"),
        ("limit", dict(data=datasets.DataConfig("x", limit=-1)), "limit must"),
        (
            "no_limit",
            dict(data=datasets.DataConfig("x", limit=0)),
            "limit must",
        ),
        ("model", dict(model=registry.ModelConfig("nope")), "unknown model"),
    )
    def test_bad_settings_fail_in_one_line_before_the_model(
        self, change, message
    ):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        with (
            mock.patch.object(registry.ModelConfig, "load") as load,
            mock.patch.object(datasets.DataConfig, "load") as read,
        ):
            with self.assertRaisesRegex(ValueError, message) as e:
                fit.run(self.config(**change), workdir)
        self.assertNotIn("\n", str(e.exception))
        load.assert_not_called()
        read.assert_not_called()
        self.assertFalse(os.path.exists(workdir))


class ScriptTest(tf.test.TestCase):
    def test_smoke(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, list(range(0, 80, 2)))
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        workdir = self.create_tempdir().full_path
        result = testing_utils.run_module(
            "experiments.fit_qtable",
            f"--model={model}",
            "--weights=none",
            f"--data={data}",
            f"--workdir={workdir}",
            "--families=standard",
            "--smoke",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("fit-standard-qf80", result.stdout)
        self.assertTrue(
            os.path.exists(
                os.path.join(workdir, "qtables_fit-standard-qf80.txt")
            )
        )
        with open(os.path.join(workdir, "config.json")) as f:
            settings = json.load(f)["settings"]
        self.assertEqual(settings["data"]["limit"], 32)
        self.assertEqual(settings["max_trials"], 3)
        with open(os.path.join(workdir, fit.SUMMARY_FILE)) as f:
            self.assertEqual(json.load(f)["n_images"], 16)  # As --help says.
