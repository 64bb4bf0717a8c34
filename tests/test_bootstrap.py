import dataclasses
from unittest import mock

import numpy as np
import tensorflow as tf

from deepn_jpeg.analysis import bootstrap, comparison
from tests import testing_utils


def half_bytes_predictions(n, seed=0):
    """Original, JPEG at QF 90 and 10, and "paper": JPEG's correctness at
    exactly half of each image's bytes. Every original and QF 90 file is
    right, so the band (95 to 99 top-1) is covered in every resample."""
    rng = np.random.default_rng(seed)
    jpeg_ranks = rng.integers(1, 3, [n, 2])  # Ranks 1 or 2.
    jpeg_ranks[:, 0] = 1
    jpeg_sizes = 2 * rng.integers(500, 1000, [n, 2])  # Even: halves exactly.
    jpeg_sizes[:, 0] *= 3
    ranks = np.concatenate([np.ones([n, 1]), jpeg_ranks, jpeg_ranks], 1)
    sizes = np.concatenate(
        [jpeg_sizes[:, :1] * 2, jpeg_sizes, jpeg_sizes // 2], 1
    )
    return testing_utils.fake_predictions(
        ranks,
        sizes,
        ["original", "jpeg", "jpeg", "paper", "paper"],
        [0, 90, 10, 90, 10],
    )


def noisy_predictions(n, seed=0):
    """Independent per-image correctness: the gains vary between resamples."""
    rng = np.random.default_rng(seed)
    accuracy = np.linspace(0.5, 0.95, 6)
    curves = ["original"] + ["jpeg"] * 6 + ["paper"] * 6
    qualities = [0] + list(range(10, 70, 10)) * 2
    right = rng.random([n, 13]) < np.concatenate([[0.9], accuracy, accuracy])
    scale = np.concatenate(
        [[8.0], np.geomspace(1, 4, 6), np.geomspace(1, 4, 6)]
    )
    scale[7:] *= 0.6
    sizes = (rng.uniform(500, 1500, [n, 1]) * scale).astype(np.int64)
    return testing_utils.fake_predictions(
        np.where(right, 1, 2), sizes, curves, qualities
    )


class GainIntervalsTest(tf.test.TestCase):
    def test_same_accuracy_at_half_the_bytes_is_2x_in_every_resample(self):
        predictions = half_bytes_predictions(40)
        intervals = bootstrap.gain_intervals(predictions, (0.0, 10.0), 50)
        self.assertEqual(
            set(intervals["targets"]), {("paper", 0.0), ("paper", 10.0)}
        )
        self.assertEqual(set(intervals["band"]), {"paper"})
        # The same images in every curve (paired): the top-1 of each paper
        # point equals JPEG's, so the gain is 2 in every resample.
        for interval in [
            *intervals["targets"].values(),
            intervals["band"]["paper"],
        ]:
            self.assertAllClose(
                [interval["low"], interval["high"]], [2.0, 2.0], atol=1e-9
            )
            self.assertEqual(interval["defined"], 1.0)

    def test_unpaired_resamples_would_not_be_2x(self):
        # Shuffling paper's images keeps each curve's points (the point
        # estimate) but breaks the pairing with JPEG's images: the same
        # bootstrap then scatters around 2.
        predictions = half_bytes_predictions(40)
        rows = np.random.default_rng(1).permutation(40)
        shuffled = dataclasses.replace(
            predictions,
            ranks=np.concatenate(
                [predictions.ranks[:, :3], predictions.ranks[rows, 3:]], 1
            ),
            sizes=np.concatenate(
                [predictions.sizes[:, :3], predictions.sizes[rows, 3:]], 1
            ),
        )
        points = comparison.curves(shuffled)
        (point,) = comparison.verdict(points, 100.0)
        self.assertAlmostEqual(point["gain"], 2.0, delta=1e-9)
        band = bootstrap.gain_intervals(shuffled, (), 200)["band"]["paper"]
        self.assertLess(band["low"], 1.95)
        self.assertGreater(band["high"], 2.05)

    def test_ones_as_counts_are_the_point_estimate(self):
        predictions = noisy_predictions(300)
        points = comparison.curves(predictions)
        original_top1 = points["original"][0]["top1"]
        resampled = bootstrap.resampled_gains(
            predictions, np.ones([1, 300]), (0.0, 2.0), (1.0, 5.0)
        )
        self.assertEqual(resampled.curves, ["paper"])
        (verdict,) = comparison.verdict(points, original_top1, (1.0, 5.0))
        self.assertIsNotNone(verdict["gain"])
        self.assertEqual(resampled.band_gain[0, 0], verdict["gain"])
        targets = comparison.gains(points, original_top1, (0.0, 2.0))
        self.assertAllEqual(
            resampled.target_gain[0, :, 0],
            [np.nan if g["gain"] is None else g["gain"] for g in targets],
        )

    def test_intervals_widen_with_fewer_images(self):
        def width(n):
            band = bootstrap.gain_intervals(
                noisy_predictions(n), (), 300, seed=2
            )["band"]["paper"]
            return band["high"] - band["low"]

        self.assertGreater(width(200), 1.5 * width(2000))

    def test_blocks_of_resamples_give_the_same_intervals(self):
        predictions = noisy_predictions(100)
        whole = bootstrap.gain_intervals(predictions, (1.0,), 30)
        with mock.patch.object(bootstrap, "_BLOCK_COUNTS", 700):  # 7 rows.
            blocks = bootstrap.gain_intervals(predictions, (1.0,), 30)
        self.assertEqual(blocks, whole)

    def test_gain_intervals_need_a_resample(self):
        # bootstrap < 0 used to end a whole evaluation in a KeyError.
        with self.assertRaisesRegex(ValueError, "num_resamples must be >= 1"):
            bootstrap.gain_intervals(None, (0.0,), -1)
