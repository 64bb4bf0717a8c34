import tensorflow as tf
from absl.testing import parameterized

from compression_helps import datasets, splits
from tests import testing_utils


class SplitTest(tf.test.TestCase):
    def test_halves_are_disjoint_seeded_and_reindexed(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, list(range(0, 22, 2)))
        source = datasets.load(root)
        ids = {}
        for part in ("fit", "heldout"):
            half = splits.split(source, part, seed=1)
            examples = list(half.dataset.as_numpy_iterator())
            self.assertEqual(
                [e["index"] for e in examples], list(range(len(examples)))
            )
            ids[part] = [e["id"].decode() for e in examples]
            self.assertEqual(ids[part], sorted(ids[part]))  # Source order.
            self.assertAllEqual(
                half.labels(), [int(e["label"]) for e in examples]
            )
            # Ranges and index lists read the same examples.
            self.assertEqual(
                [e["id"].decode() for e in half.read(2, 4).as_numpy_iterator()],
                ids[part][2:4],
            )
            self.assertEqual(
                [
                    int(e["index"])
                    for e in half.select([3, 1]).as_numpy_iterator()
                ],
                [1, 3],
            )
        self.assertLen(ids["fit"], 5)
        self.assertLen(ids["heldout"], 6)
        self.assertEmpty(set(ids["fit"]) & set(ids["heldout"]))
        again = splits.split(source, "fit", seed=1)
        self.assertEqual(
            [e["id"].decode() for e in again.dataset.as_numpy_iterator()],
            ids["fit"],
        )
        other = splits.split(source, "fit", seed=2)
        self.assertNotEqual(
            [e["id"].decode() for e in other.dataset.as_numpy_iterator()],
            ids["fit"],
        )
        self.assertIs(splits.split(source, "all"), source)

    def test_unknown_part_is_an_error(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, [0, 2])
        with self.assertRaisesRegex(ValueError, "split must be one of"):
            splits.split(datasets.load(root), "test")


class HoldoutTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("fraction", None, 0.2, 2), ("count", 3, 0.2, 3), ("one", 1, 0.0, 1)
    )
    def test_holdout(self, num_eval, eval_fraction, expected):
        is_eval = splits.holdout(10, num_eval, eval_fraction, seed=1)
        self.assertEqual(is_eval.dtype, bool)
        self.assertEqual(is_eval.sum(), expected)
        self.assertAllEqual(
            is_eval, splits.holdout(10, num_eval, eval_fraction, seed=1)
        )

    @parameterized.named_parameters(("none", 0), ("all", 10), ("more", 11))
    def test_split_without_train_or_eval_images_raises(self, num_eval):
        with self.assertRaises(ValueError):
            splits.holdout(10, num_eval)

    def test_halves_and_training_use_the_same_rule(self):
        self.assertAllEqual(
            splits.holdout(10, 5, seed=3), splits.heldout_mask(10, 5, 3)
        )
