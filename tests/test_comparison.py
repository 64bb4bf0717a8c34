import json

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.engine import ranking
from deepn_jpeg.analysis import comparison
from deepn_jpeg.jobs import rate_accuracy
from tests import testing_utils


def point(nbytes, top1):
    return {"bytes": nbytes, "top1": top1}


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
        predictions = testing_utils.fake_predictions(
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
        predictions = testing_utils.fake_predictions(
            ranks, np.ones([3, 2]), ["original", "jpeg"], [0, 50], probs
        )
        accuracy = ranking.accuracy(predictions, 1)
        self.assertAlmostEqual(accuracy["top1"], 100 / 3)
        self.assertAlmostEqual(accuracy["top5"], 200 / 3)
        # Rank 6 is outside the top 5: its probability counts as 0.
        self.assertAllClose(accuracy["mean_prob"], 100 * (0.4 + 0.5) / 3)
        point = comparison.curves(predictions)["jpeg"][0]
        self.assertEqual(point["top1"], accuracy["top1"])
        self.assertEqual(point["top5"], accuracy["top5"])


def curve(top1, nbytes):
    return [point(b, t) for t, b in zip(top1, nbytes, strict=True)]


# log bytes of a JPEG-like curve: not linear in top-1, on a non-uniform grid.
TOP1 = [60.0, 63.0, 70.0, 71.5, 78.0, 80.0]
JPEG_BYTES = [100.0, 130.0, 260.0, 300.0, 700.0, 1200.0]


class BandGainTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("half", 0.5, 2.0),
        ("same", 1.0, 1.0),
        ("third_more", 4 / 3, 0.75),
        ("tenth", 0.1, 10.0),
    )
    def test_constant_bytes_ratio_is_the_gain(self, factor, gain):
        jpeg = curve(TOP1, JPEG_BYTES)
        other = curve(TOP1, [factor * b for b in JPEG_BYTES])
        for band in [(70.0, 75.0), (60.0, 80.0), (61.2, 61.3)]:
            self.assertAlmostEqual(
                comparison.band_gain(jpeg, other, band), gain, delta=1e-9
            )

    def test_constant_ratio_on_different_non_uniform_grids(self):
        # log bytes linear in top-1: PCHIP reproduces a line exactly, so the
        # two grids need not share a point.
        def exponential(top1, scale):
            return curve(top1, [scale * np.exp(0.1 * t) for t in top1])

        jpeg = exponential([60.0, 61.0, 65.0, 74.0, 80.0], 3.0)
        other = exponential([59.0, 66.5, 67.0, 79.0, 81.0], 1.0)
        gain = comparison.band_gain(jpeg, other, (66.0, 78.0))
        self.assertAlmostEqual(gain, 3.0, delta=1e-9)

    def test_gain_is_the_mean_log_ratio_not_a_crossing(self):
        # Half the bytes below top-1 70, the same above: the geometric mean
        # over 65-75 weighs both halves.
        jpeg = curve([60.0, 70.0, 80.0], [100.0, 200.0, 400.0])
        other = curve([60.0, 70.0, 80.0], [50.0, 100.0, 400.0])
        gain = comparison.band_gain(jpeg, other, (60.0, 80.0))
        self.assertGreater(gain, 1.0)
        self.assertLess(gain, 2.0)

    def test_a_curve_that_misses_the_band_has_no_gain(self):
        jpeg = curve(TOP1, JPEG_BYTES)
        short = curve(TOP1[:4], JPEG_BYTES[:4])  # Up to top-1 71.5.
        self.assertIsNone(comparison.band_gain(jpeg, short, (70.0, 75.0)))
        self.assertIsNone(comparison.band_gain(short, jpeg, (70.0, 75.0)))
        self.assertIsNotNone(comparison.band_gain(jpeg, short, (65.0, 71.5)))
        self.assertIsNone(comparison.band_gain(jpeg, jpeg, (55.0, 75.0)))
        self.assertIsNone(comparison.band_gain(jpeg, [point(100, 0.0)], (0, 1)))

    def test_dominated_points_do_not_change_the_gain(self):
        jpeg = curve(TOP1, JPEG_BYTES)
        other = curve(TOP1, [0.7 * b for b in JPEG_BYTES])
        gain = comparison.band_gain(jpeg, other, (62.0, 79.0))
        # Bigger files that are less accurate, and a tie in top-1.
        dominated = other + [point(290.0, 69.0), point(900.0, 75.0)]
        dominated += [point(1000.0, 78.0)]
        self.assertEqual(
            comparison.band_gain(jpeg, dominated, (62.0, 79.0)), gain
        )
        self.assertEqual(
            comparison.bytes_at_top1(dominated, 74.0),
            comparison.bytes_at_top1(other, 74.0),
        )

    def test_empty_band_is_refused(self):
        jpeg = curve(TOP1, JPEG_BYTES)
        with self.assertRaisesRegex(ValueError, "low < high"):
            comparison.band_gain(jpeg, jpeg, (70.0, 70.0))


class VerdictTest(tf.test.TestCase, parameterized.TestCase):
    def curves(self):
        return {
            "original": [point(5000, 80.0)],
            "jpeg": curve(TOP1, JPEG_BYTES),
            "paper": curve(TOP1, [b / 2 for b in JPEG_BYTES]),
            "short": curve(TOP1[:3], JPEG_BYTES[:3]),
        }

    def test_band_follows_the_original_and_every_curve_gets_an_entry(self):
        verdict = comparison.verdict(self.curves(), 79.0)
        self.assertEqual([v["curve"] for v in verdict], ["paper", "short"])
        paper, short = verdict
        self.assertEqual(paper["band"], [74.0, 78.0])
        self.assertAlmostEqual(paper["gain"], 2.0, delta=1e-9)
        self.assertIsNone(paper["low"])
        self.assertEqual(paper["call"], "not settled")  # No interval.
        self.assertIsNone(short["gain"])
        self.assertEqual(short["top1_range"], [60.0, 70.0])
        self.assertEqual(short["jpeg_top1_range"], [60.0, 80.0])
        self.assertEqual(short["call"], "band not covered")
        self.assertEqual(json.loads(json.dumps(verdict)), verdict)

    @parameterized.named_parameters(
        ("above_1", 1.1, 1.4, "fewer bytes than JPEG"),
        ("below_1", 0.6, 0.95, "more bytes than JPEG"),
        ("holds_1", 0.9, 1.3, "not settled"),
        ("touches_1", 1.0, 1.3, "not settled"),
    )
    def test_call_reads_the_interval(self, low, high, call):
        entry = {"gain": 1.0, "low": low, "high": high, "defined": 1.0}
        self.assertEqual(comparison.call(entry), call)

    def test_a_band_covered_in_some_resamples_only_is_not_settled(self):
        entry = {"gain": 1.5, "low": 1.2, "high": 1.8, "defined": 0.5}
        self.assertEqual(comparison.call(entry), "not settled")

    def test_rate_accuracy_refuses_a_bad_band(self):
        for band_drops in [(5.0, 1.0), (1.0,), (2.0, 2.0)]:
            config = rate_accuracy.Config(band_drops=band_drops)
            with self.assertRaisesRegex(ValueError, "band_drops must be two"):
                rate_accuracy.check_config(config)
        with self.assertRaisesRegex(ValueError, "band_drops must be >= 0"):
            rate_accuracy.check_config(rate_accuracy.Config(band_drops=(-1, 2)))
