import tensorflow as tf
from absl.testing import parameterized

from compression_helps.sources import datasets, splits
from tests import testing_utils


class SplitTest(tf.test.TestCase):
    def test_halves_are_disjoint_seeded_and_reindexed(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, list(range(0, 22, 2)))
        source = datasets.load(root)
        ids = {}
        for part in ("fit", "heldout"):
            half = datasets.split(source, part, seed=1)
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
        again = datasets.split(source, "fit", seed=1)
        self.assertEqual(
            [e["id"].decode() for e in again.dataset.as_numpy_iterator()],
            ids["fit"],
        )
        other = datasets.split(source, "fit", seed=2)
        self.assertNotEqual(
            [e["id"].decode() for e in other.dataset.as_numpy_iterator()],
            ids["fit"],
        )
        self.assertIs(datasets.split(source, "all"), source)

    def test_unknown_part_is_an_error(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, [0, 2])
        for part in ("test", "fit:0/3", "heldout:4/3", "fit:1/1", "fit:1"):
            with self.assertRaisesRegex(ValueError, "split"):
                datasets.split(datasets.load(root), part)

    def test_folds_partition_the_examples_and_fit_is_the_rest(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, list(range(0, 20, 2)))
        source = datasets.load(root)
        all_ids = {e["id"] for e in source.dataset.as_numpy_iterator()}
        heldout = []
        for fold in (1, 2, 3):
            parts = {
                side: {
                    e["id"]
                    for e in datasets.split(
                        source, f"{side}:{fold}/3", seed=4
                    ).dataset.as_numpy_iterator()
                }
                for side in ("fit", "heldout")
            }
            self.assertEmpty(parts["fit"] & parts["heldout"])
            self.assertEqual(parts["fit"] | parts["heldout"], all_ids)
            self.assertIn(len(parts["heldout"]), (3, 4))
            heldout.append(parts["heldout"])
        self.assertEqual(set.union(*heldout), all_ids)
        self.assertEqual(sum(map(len, heldout)), len(all_ids))

    def test_too_few_examples_for_the_folds_is_an_error(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, [0, 2])
        with self.assertRaisesRegex(ValueError, "cannot split 2 examples in 3"):
            datasets.split(datasets.load(root), "heldout:1/3")


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


class SampleTest(tf.test.TestCase):
    def test_sample_is_a_seeded_subset_of_the_part(self):
        root = self.create_tempdir().full_path
        testing_utils.write_image_folder(root, list(range(0, 24, 2)))

        def ids(**kwargs):
            source = datasets.DataConfig(name=root, **kwargs).load()
            return [e["id"] for e in source.dataset.as_numpy_iterator()]

        fit = ids(split="fit:1/3", split_seed=2)
        sampled = ids(split="fit:1/3", split_seed=2, sample=3)
        self.assertLen(sampled, 3)
        self.assertContainsSubset(sampled, fit)
        self.assertEqual(sampled, sorted(sampled))  # Source order.
        self.assertEqual(sampled, ids(split="fit:1/3", split_seed=2, sample=3))
        self.assertEqual(ids(sample=100), ids())  # Smaller: all of it.
