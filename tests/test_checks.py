import tensorflow as tf
from absl.testing import parameterized

from compression_helps.core import checks
from compression_helps.models import registry
from compression_helps.sources import datasets
from tests import testing_utils


class NumberChecksTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("zero", 0, 1, None, "batch_size must be >= 1, got 0"),
        ("negative", -1, 1, None, "batch_size must be >= 1, got -1"),
        ("above", 101, 1, 100, r"must be in \[1, 100\], got 101"),
        ("float", 2.5, 1, None, "must be an integer, got 2.5"),
        ("bool", True, 1, None, "must be an integer, got True"),
        ("string", "8", 1, None, "must be an integer, got '8'"),
    )
    def test_bad_integers_are_one_line(self, value, low, high, message):
        with self.assertRaisesRegex(ValueError, message) as e:
            checks.integer("batch_size", value, low, high)
        self.assertNotIn("\n", str(e.exception))

    def test_good_integers_pass(self):
        for value in (1, 8, 1 << 40):
            self.assertEqual(checks.integer("batch_size", value, 1), value)
        self.assertEqual(checks.integer("seed", -3), -3)

    @parameterized.named_parameters(
        ("nan", float("nan"), "must be in \\(0, 1\\), got nan"),
        ("inf", float("inf"), "got inf"),
        ("low_edge", 0.0, "got 0.0"),
        ("high_edge", 1.0, "got 1.0"),
        ("string", "0.5", "got '0.5'"),
    )
    def test_bad_numbers_in_an_open_interval(self, value, message):
        with self.assertRaisesRegex(ValueError, message):
            checks.number("eval_fraction", value, 0, 1, open_interval=True)

    def test_one_sided_bounds(self):
        self.assertEqual(checks.number("tie_weight", 0, 0), 0.0)
        with self.assertRaisesRegex(ValueError, "tie_weight must be >= 0"):
            checks.number("tie_weight", -1e-9, 0)
        with self.assertRaisesRegex(ValueError, "learning_rate must be > 0"):
            checks.number("learning_rate", 0, 0, open_interval=True)

    def test_one_of_names_the_choices(self):
        self.assertEqual(checks.one_of("split", "fit", ("all", "fit")), "fit")
        with self.assertRaisesRegex(
            ValueError, r"split must be one of \('all', 'fit'\), got 'half'"
        ):
            checks.one_of("split", "half", ("all", "fit"))


class ConfigChecksTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("negative_limit", dict(limit=-1), "limit must be >= 1"),
        ("zero_limit", dict(limit=0), "limit must be >= 1"),
        ("split", dict(split="half"), "split must be one of"),
    )
    def test_bad_data_settings(self, changes, message):
        # No folder is read: "/nowhere" is not an error here.
        with self.assertRaisesRegex(ValueError, message):
            datasets.DataConfig("/nowhere", **changes).check()

    def test_good_data_settings_read_nothing(self):
        datasets.DataConfig("/nowhere", limit=1, split="fit").check()

    def test_bad_model_settings(self):
        model_file = testing_utils.tiny_model_file(
            self.create_tempdir().full_path
        )
        registry.ModelConfig(model_file, None).check()
        registry.ModelConfig("resnet50v2", None, 32).check()
        cases = [
            (registry.ModelConfig("nope"), "unknown model 'nope'"),
            (registry.ModelConfig("/nowhere/m.keras"), "model file not found"),
            (
                registry.ModelConfig("resnet50v2", "/nowhere/w.h5"),
                "/nowhere/w.h5: weights file not found",
            ),
            (
                registry.ModelConfig("resnet50v2", None, 0),
                "image_size must be >= 1",
            ),
        ]
        for config, message in cases:
            with self.subTest(message):
                with self.assertRaisesRegex(ValueError, message):
                    config.check()


if __name__ == "__main__":
    tf.test.main()
