import numpy as np
import tensorflow as tf

from compression_helps import evaluate
from deepn_jpeg import comparison


def point(nbytes, top1):
    return {"bytes": nbytes, "top1": top1}


def fake_predictions(ranks, sizes, curves, qualities, topk_probs=None):
    """Predictions of N images from `[N, V]` ranks and sizes."""
    n, v = ranks.shape
    if topk_probs is None:
        topk_probs = np.zeros([n, v, 5], np.float32)
    return evaluate.Predictions(
        ranks=np.asarray(ranks, np.int32),
        sizes=np.asarray(sizes, np.int64),
        topk=np.zeros([n, v, 5], np.int32),
        topk_probs=np.asarray(topk_probs, np.float32),
        labels=np.zeros([n], np.int32),
        curves=np.array(curves),
        qualities=np.array(qualities, np.int32),
        ids=np.array([str(i) for i in range(n)]),
        names=np.array(
            [
                "original" if c == "original" else f"{c}_q{q}"
                for c, q in zip(curves, qualities, strict=True)
            ]
        ),
        num_pixels=np.full([n], 100, np.int64),
    )


class BytesAtTop1Test(tf.test.TestCase):
    def test_interpolates_between_the_bracketing_points(self):
        curve = [point(100, 60.0), point(200, 70.0), point(400, 80.0)]
        self.assertAlmostEqual(comparison.bytes_at_top1(curve, 75.0), 300.0)
        self.assertAlmostEqual(comparison.bytes_at_top1(curve, 70.0), 200.0)

    def test_first_crossing_from_small_files_counts(self):
        curve = [point(100, 60.0), point(200, 81.0), point(300, 79.0)]
        self.assertAlmostEqual(comparison.bytes_at_top1(curve, 70.5), 150.0)

    def test_outside_the_measured_range_is_none(self):
        curve = [point(100, 60.0), point(200, 70.0)]
        self.assertIsNone(comparison.bytes_at_top1(curve, 75.0))
        self.assertIsNone(comparison.bytes_at_top1(curve, 50.0))

    def test_gain_is_jpeg_bytes_over_curve_bytes(self):
        curves = {
            "original": [point(1000, 80.0)],
            "jpeg": [point(100, 70.0), point(300, 80.0)],
            "paper": [point(50, 70.0), point(150, 80.0)],
        }
        gains = comparison.gains(curves, 80.0)
        self.assertLen(gains, len(comparison.GAIN_DROPS))
        self.assertEqual(gains[0]["curve"], "paper")
        self.assertAlmostEqual(gains[0]["gain"], 2.0)
        self.assertAlmostEqual(gains[1]["target_top1"], 79.5)
        self.assertAlmostEqual(gains[1]["gain"], 290.0 / 145.0)


class CurvesTest(tf.test.TestCase):
    def test_points_are_grouped_by_curve_and_quality_not_by_name(self):
        # "a_q5" would have been parsed as curve "a", quality 5.
        ranks = np.array([[1, 1, 3, 7], [2, 1, 1, 1]])
        sizes = np.array([[400, 100, 50, 40], [600, 300, 150, 100]])
        predictions = fake_predictions(
            ranks, sizes, ["original", "jpeg", "a_q5", "a_q5"], [0, 50, 90, 10]
        )
        points = comparison.curves(predictions)
        self.assertEqual(list(points), ["original", "jpeg", "a_q5"])
        self.assertEqual([p["quality"] for p in points["a_q5"]], [90, 10])
        self.assertIsNone(points["original"][0]["quality"])
        self.assertEqual(points["a_q5"][1]["bytes"], 140)
        self.assertEqual(points["a_q5"][1]["top1"], 50.0)
        self.assertEqual(points["a_q5"][1]["top5"], 50.0)
        self.assertAlmostEqual(points["jpeg"][0]["cr"], 1000 / 400)

    def test_top1_top5_come_from_evaluate_accuracy(self):
        ranks = np.array([[1, 6], [5, 2], [2, 1]])
        probs = np.tile(np.linspace(0.5, 0.1, 5), [3, 2, 1])
        predictions = fake_predictions(
            ranks, np.ones([3, 2]), ["original", "jpeg"], [0, 50], probs
        )
        accuracy = evaluate.accuracy(predictions, 1)
        self.assertAlmostEqual(accuracy["top1"], 100 / 3)
        self.assertAlmostEqual(accuracy["top5"], 200 / 3)
        # Rank 6 is outside the top 5: its probability counts as 0.
        self.assertAllClose(accuracy["mean_prob"], 100 * (0.4 + 0.5) / 3)
        point = comparison.curves(predictions)["jpeg"][0]
        self.assertEqual(point["top1"], accuracy["top1"])
        self.assertEqual(point["top5"], accuracy["top5"])


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
        predictions = fake_predictions(
            ranks,
            sizes,
            ["original", "jpeg", "jpeg", "paper", "paper"],
            [0, 90, 10, 90, 10],
        )
        intervals = comparison.gain_intervals(predictions, (0.0, 10.0), 50)
        self.assertEqual(set(intervals), {("paper", 0.0), ("paper", 10.0)})
        # Sizes halve up to rounding: the gain is 2 in every resample.
        for interval in intervals.values():
            self.assertAllClose(
                [interval["low"], interval["high"]], [2.0, 2.0], atol=0.01
            )
            self.assertEqual(interval["defined"], 1.0)
