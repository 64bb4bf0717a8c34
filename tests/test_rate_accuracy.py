import json
import os

import numpy as np
import tensorflow as tf

from compression_helps import datasets, evaluate
from deepn_jpeg import rate_accuracy, tables
from tests import testing_utils
from tests.test_models import tiny_classifier_file


def point(nbytes, top1):
    return {"bytes": nbytes, "top1": top1}


class BytesAtTop1Test(tf.test.TestCase):
    def test_interpolates_between_the_bracketing_points(self):
        curve = [point(100, 60.0), point(200, 70.0), point(400, 80.0)]
        self.assertAlmostEqual(rate_accuracy.bytes_at_top1(curve, 75.0), 300.0)
        self.assertAlmostEqual(rate_accuracy.bytes_at_top1(curve, 70.0), 200.0)

    def test_first_crossing_from_small_files_counts(self):
        curve = [point(100, 60.0), point(200, 81.0), point(300, 79.0)]
        self.assertAlmostEqual(rate_accuracy.bytes_at_top1(curve, 70.5), 150.0)

    def test_outside_the_measured_range_is_none(self):
        curve = [point(100, 60.0), point(200, 70.0)]
        self.assertIsNone(rate_accuracy.bytes_at_top1(curve, 75.0))
        self.assertIsNone(rate_accuracy.bytes_at_top1(curve, 50.0))

    def test_gain_is_jpeg_bytes_over_curve_bytes(self):
        curves = {
            "original": [point(1000, 80.0)],
            "jpeg": [point(100, 70.0), point(300, 80.0)],
            "paper": [point(50, 70.0), point(150, 80.0)],
        }
        gains = rate_accuracy.gains(curves, 80.0)
        self.assertLen(gains, len(rate_accuracy.GAIN_DROPS))
        self.assertEqual(gains[0]["curve"], "paper")
        self.assertAlmostEqual(gains[0]["gain"], 2.0)
        self.assertAlmostEqual(gains[1]["target_top1"], 79.5)
        self.assertAlmostEqual(gains[1]["gain"], 290.0 / 145.0)


class GainIntervalsTest(tf.test.TestCase):
    def test_same_accuracy_at_half_the_bytes_is_2x_in_every_resample(self):
        rng = np.random.default_rng(0)
        n = 40
        jpeg_ranks = rng.integers(1, 3, [n, 2])  # Ranks 1 or 2.
        jpeg_ranks[:, 0] = 1  # Quality 90: every image right.
        jpeg_sizes = rng.integers(1000, 2000, [n, 2])
        jpeg_sizes[:, 0] *= 3
        ranks = np.concatenate([np.ones([n, 1]), jpeg_ranks, jpeg_ranks], 1)
        sizes = np.concatenate(
            [jpeg_sizes[:, :1] * 2, jpeg_sizes, jpeg_sizes // 2], 1
        )
        predictions = evaluate.Predictions(
            ranks=ranks.astype(np.int32),
            sizes=sizes.astype(np.int64),
            topk=np.zeros([n, 5, 5], np.int32),
            topk_probs=np.zeros([n, 5, 5], np.float32),
            labels=np.zeros([n], np.int32),
            qualities=np.array([0, -1, -1, -1, -1], np.int32),
            ids=np.array([str(i) for i in range(n)]),
            names=np.array(
                ["original", "jpeg_q90", "jpeg_q10", "paper_q90", "paper_q10"]
            ),
            num_pixels=np.full([n], 100, np.int64),
        )
        intervals = rate_accuracy.gain_intervals(predictions, (0.0, 10.0), 50)
        self.assertEqual(set(intervals), {("paper", 0.0), ("paper", 10.0)})
        # Sizes halve up to rounding: the gain is 2 in every resample.
        for interval in intervals.values():
            self.assertAllClose(
                [interval["low"], interval["high"]], [2.0, 2.0], atol=0.01
            )
            self.assertEqual(interval["defined"], 1.0)


class RunTest(tf.test.TestCase):
    def test_tiny_end_to_end_on_the_heldout_half(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [0, 3, 5, 9, 11, 12, 20, 30])
        design = self.create_tempdir().full_path
        luma, chroma = tables.standard_qtables(50)
        tables.save_json(
            os.path.join(design, "qtables_paper.json"),
            luma * 2,
            np.minimum(chroma * 2, 255),
        )
        model = tiny_classifier_file(
            self.create_tempdir().full_path + "/m.keras"
        )
        workdir = self.create_tempdir().full_path
        config = rate_accuracy.Config(
            tables=design,
            model=model,
            data=data,
            split="heldout",
            split_seed=3,
            qualities=(90, 50, 10),
            batch_size=2,
            diagnostics=("paper",),
            gain_drops=(0.0, 2.0),
            bootstrap=20,
        )
        result = rate_accuracy.run(config, workdir, verbose=False)
        self.assertEqual(
            set(result["curves"]),
            {
                "original",
                "jpeg",
                "paper",
                "paper-luma",
                "paper-chroma",
                "jpeg-lumascale",
                "jpeg-chromascale",
            },
        )
        self.assertLen(result["curves"]["jpeg"], 3)
        self.assertLen(result["gains"], 2 * 5)
        # Same quality, coarser tables: smaller files.
        for jpeg, deepn in zip(
            result["curves"]["jpeg"], result["curves"]["paper"], strict=True
        ):
            self.assertEqual(jpeg["quality"], deepn["quality"])
            self.assertLess(deepn["bytes"], jpeg["bytes"])
        # Only the held-out half was evaluated.
        predictions = evaluate.Predictions.load(
            os.path.join(workdir, "predictions.npz")
        )
        heldout = datasets.split(datasets.load(data), "heldout", 3)
        self.assertAllEqual(
            predictions.ids,
            [e["id"].decode() for e in heldout.dataset.as_numpy_iterator()],
        )
        self.assertIn("paper_q50", predictions.names.tolist())
        with open(os.path.join(workdir, "rate_accuracy.json")) as f:
            self.assertEqual(json.load(f)["n_images"], 4)
        self.assertTrue(
            os.path.exists(os.path.join(workdir, "rate_accuracy.png"))
        )
        self.assertIn("| paper-luma |", rate_accuracy.to_text(result))


class DiagnosticsTest(tf.test.TestCase):
    def test_diagnostic_curves_mix_the_tables(self):
        luma = np.full([8, 8], 7, np.int32)
        chroma = np.full([8, 8], 200, np.int32)
        result = rate_accuracy.curve_tables(
            {"paper": (luma, chroma)}, 50, ("paper",), diagnostic_quality=90
        )
        std_luma, std_chroma = tables.standard_qtables(50)
        self.assertAllEqual(result["jpeg"][0], std_luma)
        self.assertAllEqual(result["paper-luma"][0], luma)
        self.assertAllEqual(result["paper-luma"][1], std_chroma)
        self.assertAllEqual(result["paper-chroma"][0], std_luma)
        self.assertAllEqual(result["paper-chroma"][1], chroma)
        fixed_luma, fixed_chroma = tables.standard_qtables(90)
        self.assertAllEqual(result["jpeg-lumascale"][0], std_luma)
        self.assertAllEqual(result["jpeg-lumascale"][1], fixed_chroma)
        self.assertAllEqual(result["jpeg-chromascale"][0], fixed_luma)
        self.assertAllEqual(result["jpeg-chromascale"][1], std_chroma)

    def test_unknown_diagnostics_name_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "not table sets"):
            rate_accuracy.curve_tables({}, 50, ("paper",))

    def test_folders_give_every_tables_file_paper_first(self):
        folder = self.create_tempdir().full_path
        luma, chroma = tables.standard_qtables(50)
        for name in ("fit-plm-qf50", "monotone", "paper"):
            tables.save_json(
                os.path.join(folder, f"qtables_{name}.json"), luma, chroma
            )
        found = rate_accuracy.load_tablesets(folder)
        self.assertEqual(list(found), ["paper", "monotone", "fit-plm-qf50"])
        with self.assertRaisesRegex(ValueError, "two table sets"):
            rate_accuracy.load_tablesets((folder, folder))
        with self.assertRaisesRegex(FileNotFoundError, "no such"):
            rate_accuracy.load_tablesets(folder + "/missing")


class ScriptTest(tf.test.TestCase):
    def test_missing_tables_is_one_line_error(self):
        result = testing_utils.run_module(
            "experiments.eval_deepn_jpeg",
            "--tables=/nonexistent/tables",
            f"--workdir={self.create_tempdir().full_path}",
        )
        self.assertEqual(result.returncode, 2)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],
            "error: /nonexistent/tables: no such tables file or folder",
        )
