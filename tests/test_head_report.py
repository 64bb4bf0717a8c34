import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.multi_input import head_report


class AccuracyTest(tf.test.TestCase, parameterized.TestCase):
    def test_percent_by_rank(self):
        probabilities = np.array(
            [
                [0.5, 0.2, 0.1, 0.1, 0.05, 0.05],  # Label 0: rank 1.
                [0.5, 0.2, 0.1, 0.1, 0.05, 0.05],  # Label 1: rank 2.
                [0.3, 0.2, 0.2, 0.1, 0.1, 0.1],  # Label 5: rank 4 (ties).
                [0.5, 0.3, 0.1, 0.05, 0.04, 0.01],  # Label 5: rank 6.
            ]
        )
        got = head_report.accuracy(probabilities, np.array([0, 1, 5, 5]))
        self.assertEqual(got, {"top1": 25.0, "top5": 75.0})

    @parameterized.named_parameters(("first", 0), ("last", 9))
    def test_all_equal_probabilities_are_top1(self, label):
        # SPEC.md "Ranks": no class is strictly more probable.
        got = head_report.accuracy(np.full((1, 10), 0.1), np.array([label]))
        self.assertEqual(got, {"top1": 100.0, "top5": 100.0})

    def test_absent_classes_never_outrank_in_the_restricted_metrics(self):
        probabilities = np.array(
            [
                [0.6, 0.3, 0.1, 0.0],  # Label 1; class 0 is absent.
                [0.1, 0.2, 0.3, 0.4],  # Label 2; class 3 is present.
            ]
        )
        got = head_report.accuracy(probabilities, np.array([1, 2]), [1, 2, 3])
        self.assertEqual(got["top1"], 0.0)
        self.assertEqual(got["top1_present"], 50.0)
        self.assertEqual(got["top5_present"], 100.0)


class CompareTest(tf.test.TestCase):
    def test_always_right_where_the_control_is_wrong(self):
        hits = np.ones(50, bool)
        got = head_report.compare(hits, ~hits)
        self.assertEqual(got["gain"], 100.0)
        self.assertEqual(got["interval"], [100.0, 100.0])

    def test_pairing_removes_the_shared_variation(self):
        # The same answers: every resampled difference is 0, although each
        # accuracy alone would vary from resample to resample.
        hits = np.random.default_rng(0).random(200) < 0.5
        self.assertEqual(
            head_report.compare(hits, hits),
            {"gain": 0.0, "interval": [0.0, 0.0]},
        )

    def test_interval_holds_the_gain_and_narrows_with_more_images(self):
        rng = np.random.default_rng(1)
        widths = []
        for n in (400, 6400):
            control = rng.random(n) < 0.7
            # Right where the control is, and on 10% of its misses too.
            hits = control | (rng.random(n) < 0.1)
            got = head_report.compare(hits, control, seed=3)
            low, high = got["interval"]
            self.assertLessEqual(low, got["gain"])
            self.assertLessEqual(got["gain"], high)
            self.assertGreaterEqual(low, 0.0)  # Never worse on any image.
            widths.append(high - low)
        self.assertLess(widths[1], widths[0] / 2)


class SummarizeTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        labels = np.array([0, 1, 2, 0])
        right = np.eye(3)[labels]
        wrong = np.eye(3)[(labels + 1) % 3]
        self.labels = labels
        self.probabilities = {
            "backbone": wrong,
            "multi_input": right,
            "single_input": np.concatenate([right[:2], wrong[2:]]),
            "mixing": wrong,
        }

    def test_scores_and_gains_over_the_control(self):
        summary = head_report.summarize(
            self.probabilities, self.labels, [0, 1, 2]
        )
        self.assertEqual(summary["scores"]["multi_input"]["top1"], 100.0)
        self.assertEqual(summary["scores"]["single_input"]["top1"], 50.0)
        versus = summary["versus_single_input"]
        self.assertEqual(set(versus), {"multi_input", "mixing"})
        self.assertEqual(versus["multi_input"]["top1"]["gain"], 50.0)
        self.assertEqual(versus["mixing"]["top1"]["gain"], -50.0)
        table = head_report.format_table(summary)
        self.assertIn("| multi_input | 100.00 |", table)
        self.assertIn("+50.00 [", table)

    def test_without_the_control_there_is_no_gain(self):
        del self.probabilities["single_input"]
        summary = head_report.summarize(
            self.probabilities, self.labels, [0, 1, 2]
        )
        self.assertEqual(summary["versus_single_input"], {})


class EpochsPlotTest(tf.test.TestCase):
    def test_one_line_per_head_and_the_backbone(self):
        rows = [
            {"epoch": 1, "val_multi_input_top1": 0.5, "val_mixing_top1": 0.4},
            {"epoch": 2, "val_multi_input_top1": 0.6, "val_mixing_top1": 0.5},
        ]
        scores = {
            "backbone": {"top1": 45.0},
            "multi_input": {"top1": 60.0},
            "mixing": {"top1": 50.0},
        }
        figure = head_report.epochs_figure(rows, scores, "title")
        lines = figure.axes[0].get_lines()
        self.assertLen(lines, 3)
        self.assertAllClose(lines[0].get_ydata(), [50.0, 60.0])
        self.assertAllClose(lines[2].get_ydata(), [45.0, 45.0])
        path = os.path.join(self.create_tempdir().full_path, "epochs.png")
        figure.savefig(path)
        self.assertGreater(os.path.getsize(path), 1000)


if __name__ == "__main__":
    tf.test.main()
