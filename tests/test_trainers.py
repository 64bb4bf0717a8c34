import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps import trainers


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
        got = trainers.accuracy(probabilities, np.array([0, 1, 5, 5]))
        self.assertEqual(got, {"top1": 25.0, "top5": 75.0})

    @parameterized.named_parameters(("first", 0), ("last", 9))
    def test_all_equal_probabilities_are_top1(self, label):
        # SPEC.md "Ranks": no class is strictly more probable.
        got = trainers.accuracy(np.full((1, 10), 0.1), np.array([label]))
        self.assertEqual(got, {"top1": 100.0, "top5": 100.0})


if __name__ == "__main__":
    tf.test.main()
