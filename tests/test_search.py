import tensorflow as tf

from deepn_jpeg.analysis import search


class FitScaleTest(tf.test.TestCase):
    def test_lands_within_the_budget_and_tolerance(self):
        def total_bytes(scale):  # A staircase, as integer tables give.
            return int(1e6 * scale**-0.8) // 100 * 100

        scale, nbytes, passes = search.fit_scale(total_bytes, 2e5, 1.0, 0.01)
        self.assertLessEqual(nbytes, 2e5)
        self.assertGreaterEqual(nbytes, 0.99 * 2e5)
        self.assertEqual(total_bytes(scale), nbytes)
        self.assertLess(passes, 10)

    def test_unreachable_budget_is_none(self):
        scale, nbytes, _ = search.fit_scale(lambda s: 1000, 10, 1.0)
        self.assertIsNone(scale)
        self.assertIsNone(nbytes)
