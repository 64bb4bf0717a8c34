import json
import os
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps import datasets
from deepn_jpeg import codec, fit, statistics, tables
from tests import testing_utils
from tests.test_models import tiny_classifier_file


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


class FamilyTest(tf.test.TestCase, parameterized.TestCase):
    def test_standard_family_starts_at_the_qf50_tables(self):
        family = fit.make_family("standard")
        luma, chroma = family.shape(np.array(family.start), 1.0)
        expected = tables.standard_qtables(50)
        self.assertAllEqual(luma, expected[0])
        self.assertAllEqual(chroma, expected[1])

    def test_plm_family_starts_at_the_monotone_design(self):
        stats = tiny_stats()
        family = fit.make_family("plm", stats)
        luma, chroma = family.shape(np.array(family.start), 1.0)
        self.assertAllEqual(luma, tables.plm(stats.std("luma"), "monotone"))
        self.assertAllEqual(chroma, tables.plm(stats.std("chroma"), "monotone"))

    @parameterized.named_parameters(("plm", "plm"), ("standard", "standard"))
    def test_any_parameters_give_valid_tables(self, name):
        family = fit.make_family(name, tiny_stats())
        size = len(family.start)
        units = [np.zeros(size), np.ones(size), np.full(size, 0.3)]
        for unit in units:
            for scale in (1e-3, 1.0, 1e3):
                for table in family.shape(family.from_unit(unit), scale):
                    tables.validate_qtable(table)
        self.assertAllClose(
            family.to_unit(family.from_unit(units[2])), units[2]
        )

    @parameterized.named_parameters(("plm", "plm"), ("standard", "standard"))
    def test_larger_scale_never_gives_finer_steps(self, name):
        family = fit.make_family(name, tiny_stats())
        x = family.from_unit(np.full(len(family.start), 0.4))
        for small, large in [(0.5, 1.0), (1.0, 2.0)]:
            for a, b in zip(
                family.shape(x, small), family.shape(x, large), strict=True
            ):
                self.assertTrue(np.all(a <= b))

    def test_unknown_family_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "family must be one of"):
            fit.make_family("jpeg2000")


class FitScaleTest(tf.test.TestCase):
    def test_lands_within_the_budget_and_tolerance(self):
        def total_bytes(scale):  # A staircase, as integer tables give.
            return int(1e6 * scale**-0.8) // 100 * 100

        scale, nbytes, passes = fit.fit_scale(total_bytes, 2e5, 1.0, 0.01)
        self.assertLessEqual(nbytes, 2e5)
        self.assertGreaterEqual(nbytes, 0.99 * 2e5)
        self.assertEqual(total_bytes(scale), nbytes)
        self.assertLess(passes, 10)

    def test_unreachable_budget_is_none(self):
        scale, nbytes, _ = fit.fit_scale(lambda s: 1000, 10, 1.0)
        self.assertIsNone(scale)
        self.assertIsNone(nbytes)


class RunTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, list(range(0, 24, 2)))
        self.model = tiny_classifier_file(
            self.create_tempdir().full_path + "/m.keras"
        )

    def config(self, **kwargs):
        defaults = dict(
            model=self.model,
            data=self.data,
            budget_qualities=(50, 20),
            max_trials=5,
            batch_size=4,
            num_threads=2,
        )
        return fit.Config(**{**defaults, **kwargs})

    def test_fits_logs_and_never_loses_to_the_start(self):
        workdir = self.create_tempdir().full_path
        config = self.config()
        summary = fit.run(config, workdir, verbose=False)

        # Only the fit half of the images is used.
        self.assertEqual(summary["n_images"], 6)
        # Every trial is logged with its parameters, bytes and accuracy.
        searched = [t for t in read_log(workdir) if "family" in t]
        self.assertLen(searched, 2 * 2 * config.max_trials)
        for key in ("params", "bytes", "top1", "top5", "mean_prob"):
            self.assertIn(key, searched[0])
        for budget in summary["budgets"]:
            for fitted in budget["fitted"]:
                best, start = fitted["best"], fitted["start"]
                family = fit.make_family(fitted["family"], tiny_stats())
                self.assertEqual(fitted["num_trials"], config.max_trials)
                self.assertAllClose(
                    list(start["params"].values()), family.start
                )
                # Same budget; never a lower score than the unfitted table.
                self.assertLessEqual(best["bytes"], budget["jpeg"]["bytes"])
                self.assertLessEqual(start["bytes"], budget["jpeg"]["bytes"])
                self.assertGreaterEqual(
                    fit.score(best, config.tie_weight),
                    fit.score(start, config.tie_weight),
                )
                # The exported tables are the best trial's, in both formats.
                path = os.path.join(workdir, f"qtables_{fitted['name']}")
                luma, chroma = tables.load_json(path + ".json")
                self.assertAllEqual(luma, best["luma"])
                with open(path + ".txt") as f:
                    read = tables.read_cjpeg_qtables(f.read())
                self.assertAllEqual(read[1], chroma)
        # The standard family starts at standard JPEG itself.
        start = summary["budgets"][0]["fitted"][1]["start"]
        self.assertEqual(start["bytes"], summary["budgets"][0]["jpeg"]["bytes"])

    def test_resume_replays_the_log_and_goes_on(self):
        workdir = self.create_tempdir().full_path
        config = self.config(families=("standard",), budget_qualities=(30,))
        summary = fit.run(config, workdir, verbose=False)
        logged = read_log(workdir)

        # A finished run replays everything: no file written, no model call.
        with (
            mock.patch.object(codec, "encode", wraps=codec.encode) as encode,
            mock.patch.object(fit.TrialEvaluator, "classify") as classify,
        ):
            again = fit.run(config, workdir, resume=True, verbose=False)
        self.assertEqual(encode.call_count, 0)
        self.assertEqual(classify.call_count, 0)
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
        self.assertEqual(
            resumed["budgets"][0]["fitted"][0]["best"]["key"],
            summary["budgets"][0]["fitted"][0]["best"]["key"],
        )

        # Without resume the log starts over.
        fit.run(config, workdir, verbose=False)
        self.assertLen(read_log(workdir), len(logged))
        # A longer search resumes: the logged trials replay, only the new
        # ones are computed. Other settings are refused.
        longer = fit.run(
            self.config(
                families=("standard",), budget_qualities=(30,), max_trials=7
            ),
            workdir,
            resume=True,
            verbose=False,
        )
        self.assertEqual(longer["trials_computed"], 2)
        with self.assertRaisesRegex(ValueError, "budget_qualities"):
            fit.run(
                self.config(families=("standard",), budget_qualities=(40,)),
                workdir,
                resume=True,
                verbose=False,
            )

    def test_evaluator_matches_the_shared_pipeline(self):
        from compression_helps import evaluate, models
        from deepn_jpeg import rate_accuracy

        source = datasets.load(self.data, limit=4)
        classifier = models.load_classifier(self.model)
        images, labels, _ = fit._load_images(source)
        evaluator = fit.TrialEvaluator(classifier, images, labels, 2)
        luma, chroma = tables.standard_qtables(50)
        files = evaluator.encode(luma * 2, chroma)
        got = evaluator.classify(files)
        evaluator.close()
        predictions, _ = evaluate.predict(
            classifier,
            source,
            [rate_accuracy.table_codec("t", luma * 2, chroma, "4:2:0")],
            batch_size=2,
            verbose=False,
        )
        self.assertEqual(predictions.sizes[:, 1].sum(), sum(map(len, files)))
        self.assertAllClose(
            got["top5"], 100 * np.mean(predictions.ranks[:, 1] <= 5)
        )


class ScriptTest(tf.test.TestCase):
    def run_script(self, *flags):
        return testing_utils.run_module("experiments.fit_qtable", *flags)

    def test_smoke(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, list(range(0, 40, 2)))
        model = tiny_classifier_file(
            self.create_tempdir().full_path + "/m.keras"
        )
        workdir = self.create_tempdir().full_path
        result = self.run_script(
            f"--model={model}",
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

    def test_bad_family_is_one_line_error(self):
        result = self.run_script(
            f"--workdir={self.create_tempdir().full_path}", "--families=png"
        )
        self.assertEqual(result.returncode, 2)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],
            "error: family must be one of ('plm', 'standard'), got 'png'",
        )
