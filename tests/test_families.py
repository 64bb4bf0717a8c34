import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from deepn_jpeg.analysis import families, statistics
from deepn_jpeg.jpeg import tables
from tests import testing_utils


def tiny_stats():
    images = [testing_utils.random_image(seed=i) for i in range(3)]
    dataset = tf.data.Dataset.from_tensor_slices(
        {
            "image_bytes": [testing_utils.jpeg_bytes(i) for i in images],
            "label": [0, 1, 2],
        }
    )
    return statistics.compute(dataset)


class FamilyTest(tf.test.TestCase, parameterized.TestCase):
    def test_standard_family_starts_at_the_qf50_tables(self):
        family = families.make_family("standard")
        luma, chroma = family.shape(np.array(family.start), 1.0)
        expected = tables.standard_qtables(50)
        self.assertAllEqual(luma, expected[0])
        self.assertAllEqual(chroma, expected[1])

    def test_plm_family_starts_at_the_monotone_design(self):
        stats = tiny_stats()
        family = families.make_family("plm", stats)
        luma, chroma = family.shape(np.array(family.start), 1.0)
        self.assertAllEqual(luma, tables.plm(stats.std("luma"), "monotone"))
        self.assertAllEqual(chroma, tables.plm(stats.std("chroma"), "monotone"))

    @parameterized.named_parameters(("plm", "plm"), ("standard", "standard"))
    def test_any_parameters_give_valid_tables(self, name):
        family = families.make_family(name, tiny_stats())
        size = len(family.start)
        units = [np.zeros(size), np.ones(size), np.full(size, 0.3)]
        for unit in units:
            for scale in (1e-3, 1.0, 1e3):
                for table in family.shape(family.from_unit(unit), scale):
                    tables.validate_qtable(table)
        self.assertAllClose(
            family.to_unit(family.from_unit(units[2])), units[2]
        )

    @parameterized.named_parameters(("plm", "plm"), ("standard", "standard"))
    def test_larger_scale_never_gives_finer_steps(self, name):
        family = families.make_family(name, tiny_stats())
        x = family.from_unit(np.full(len(family.start), 0.4))
        for small, large in [(0.5, 1.0), (1.0, 2.0)]:
            for a, b in zip(
                family.shape(x, small), family.shape(x, large), strict=True
            ):
                self.assertTrue(np.all(a <= b))

    def test_unknown_family_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "family must be one of"):
            families.make_family("jpeg2000")
