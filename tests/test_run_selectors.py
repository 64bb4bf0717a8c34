import json
import os
import shutil

import keras
import tensorflow as tf

from compression_helps import evaluate, report
from tests import testing_utils


def run_script(*flags):
    return testing_utils.run_module(
        "experiments.run_selectors", *flags, timeout=600
    )


class RunSelectorsTest(tf.test.TestCase):
    def test_end_to_end_on_8_real_images_with_random_weights(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        data = self.create_tempdir().full_path
        for path in testing_utils.sample_paths(8):
            shutil.copy(path, data)
        workdir = self.create_tempdir().full_path
        result = run_script(
            "--model=resnet50v2",
            "--weights=none",
            "--image_size=64",
            f"--data={data}",
            f"--workdir={workdir}",
            "--batch_size=3",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("| hrs |", result.stdout)

        predictions = evaluate.Predictions.load(
            os.path.join(workdir, "predictions.npz")
        )
        self.assertEqual(predictions.ranks.shape, (8, 11))
        self.assertEqual(predictions.topk.shape, (8, 11, 5))
        self.assertAllEqual(
            predictions.qualities, [0, 100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
        )
        self.assertEqual(
            predictions.names.tolist(),
            ["original"] + [f"qf{q}" for q in range(100, 0, -10)],
        )
        self.assertAllInRange(predictions.ranks, 1, 1000)
        # Candidate 0 is the original file as stored.
        for i, image_id in enumerate(predictions.ids):
            size = os.path.getsize(os.path.join(data, image_id))
            self.assertEqual(predictions.sizes[i, 0], size)
        # rank == 1 iff the top-1 class is the label.
        top1 = predictions.topk[:, :, 0] == predictions.labels[:, None]
        self.assertAllEqual(predictions.ranks == 1, top1)

        with open(os.path.join(workdir, "report.json")) as f:
            saved = json.load(f)
        self.assertEqual(saved["n_images"], 8)
        self.assertEqual(saved["n_errors"], 0)
        expected = report.summarize(predictions)
        self.assertEqual(
            [r["name"] for r in saved["rows"]], [r["name"] for r in expected]
        )
        for got, want in zip(saved["rows"], expected, strict=True):
            for key in ("top1", "top5", "cr", "mean_bytes", "bpp"):
                self.assertAlmostEqual(got[key], want[key], places=9)
        original = saved["rows"][0]
        self.assertEqual(original["name"], "original")
        self.assertEqual(original["cr"], 1.0)
        self.assertAlmostEqual(
            original["mean_bytes"], float(predictions.sizes[:, 0].mean())
        )
        with open(os.path.join(workdir, "report.csv")) as f:
            self.assertLen(f.read().strip().splitlines(), len(expected) + 1)
        self.assertTrue(
            os.path.getsize(os.path.join(workdir, "accuracy_vs_cr.png")) > 0
        )

        # The report is rebuilt from predictions.npz without the model.
        os.remove(os.path.join(workdir, "report.json"))
        result = run_script("--report_only", f"--workdir={workdir}")
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(workdir, "report.json")) as f:
            self.assertEqual(json.load(f), saved)

    def test_usage_errors_are_one_line_with_status_2(self):
        workdir = self.create_tempdir().full_path
        a_file = self.create_tempfile().full_path
        wrong_weights = self.create_tempdir().full_path + "/w.weights.h5"
        keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(2)]
        ).save_weights(wrong_weights)
        random_resnet = ["--model=resnet50v2", "--image_size=32"]
        cases = [
            (["--model=nope"], "unknown model", workdir),
            (["--qualities=50,500", "--weights=none"], "[1, 100]", workdir),
            (["--qualities=a,b"], "invalid literal", workdir),
            (
                [*random_resnet, "--weights=none", "--data=/nowhere"],
                "/nowhere",
                workdir,
            ),
            ([*random_resnet, "--weights=/nowhere/w.h5"], "not found", workdir),
            (
                [*random_resnet, f"--weights={wrong_weights}"],
                "cannot load",
                workdir,
            ),
            (
                [*random_resnet, "--weights=none"],
                "cannot create the workdir",
                a_file + "/sub",
            ),
            (["--report_only"], "no predictions", workdir),
        ]
        for flags, message, out in cases:
            result = run_script(*flags, f"--workdir={out}")
            self.assertEqual(result.returncode, 2, (flags, result.stderr))
            last = result.stderr.strip().splitlines()[-1]
            self.assertIn(message, last)
            self.assertTrue(last.startswith("error: "), last)
            self.assertNotIn("Traceback", result.stderr)
