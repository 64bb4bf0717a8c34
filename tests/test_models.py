import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.models import registry
from tests import testing_utils


class OneLineErrorMixin:
    def assert_one_line_error(self, path, reason, function, *args, **kwargs):
        """`function(...)` raises a one-line ValueError `<path>: ...`."""
        with self.assertRaises(ValueError) as e:
            function(*args, **kwargs)
        message = str(e.exception)
        self.assertNotIn("\n", message)
        self.assertStartsWith(message, f"{path}: ")
        self.assertIn(reason, message)


def truncate_to_half(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def save_model(path, outputs_of, input_shape=(16, 16, 3)):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Rescaling(1 / 255.0)(inputs)
    )
    keras.Model(inputs, outputs_of(x)).save(path)
    return path


class RegistryTest(OneLineErrorMixin, tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(("inception_v3", 299), ("resnet50v2", 224))
    def test_keras_applications_build_at_their_own_size(self, name, size):
        classifier = registry.load_classifier(name, weights=None)
        self.assertEqual(classifier.image_size, size)
        self.assertEqual(classifier.model.input_shape, (None, size, size, 3))
        self.assertEqual(classifier.num_classes, 1000)

    @parameterized.parameters(
        ("efficientnet_lite0", 224, 224 / 256),
        ("efficientnet_lite1", 240, 240 / 272),
        ("efficientnet_lite2", 260, 260 / 292),
    )
    def test_efficientnet_lite_variants_use_their_own_size_and_crop(
        self, name, size, crop_fraction
    ):
        spec = registry.REGISTRY[name]()
        self.assertEqual(spec.name, name)
        self.assertAlmostEqual(spec.crop_fraction, crop_fraction)
        self.assertEqual(spec.resize_method, "bicubic")
        classifier = registry.load_classifier(name, weights=None)
        self.assertEqual(classifier.model.name, name)
        self.assertEqual(classifier.model.input_shape, (None, size, size, 3))
        image = tf.zeros([400, 300, 3], tf.uint8)
        self.assertEqual(classifier.resize(image).shape, [size, size, 3])
        pixels = tf.constant([[0.0] * 3, [127.0] * 3, [255.0] * 3])
        self.assertAllClose(
            classifier.preprocess_input(pixels)[:, 0], [-127 / 128, 0.0, 1.0]
        )

    def test_resnet50v2_at_299_as_the_authors_used(self):
        classifier = registry.load_classifier(
            "resnet50v2", None, image_size=299
        )
        self.assertEqual(classifier.model.input_shape, (None, 299, 299, 3))
        image = tf.zeros([400, 300, 3], tf.uint8)
        self.assertEqual(classifier.resize(image).shape, [299, 299, 3])

    def test_unknown_model_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, "unknown model 'vgg99'"):
            registry.load_classifier("vgg99")

    def test_offline_imagenet_weights_name_file_place_and_checksum(self):
        spec = registry.REGISTRY["resnet50v2"]()
        offline = dataclasses.replace(
            spec,
            imagenet_weights=registry.KerasWeights(
                "not_cached_weights_for_test.h5",
                "http://127.0.0.1:9/not_cached_weights_for_test.h5",
                "0123456789abcdef0123456789abcdef",
            ),
        )
        with self.assertRaises(registry.WeightsError) as e:
            registry._fetch_keras_weights(offline)
        message = str(e.exception)
        self.assertNotIn("\n", message)
        self.assertIn("not_cached_weights_for_test.h5", message)
        self.assertIn("0123456789abcdef0123456789abcdef", message)
        self.assertIn("models/", message)

    def test_missing_weights_file(self):
        with self.assertRaisesRegex(registry.WeightsError, "not found"):
            registry.load_classifier("resnet50v2", "/nowhere/w.h5", 32)

    def test_weights_of_another_architecture(self):
        path = self.create_tempdir().full_path + "/other.weights.h5"
        keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(2)]
        ).save_weights(path)
        with self.assertRaisesRegex(registry.WeightsError, "cannot load"):
            registry.load_classifier("resnet50v2", path, 32)

    def test_model_file(self):
        path = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        classifier = registry.load_classifier(path)
        self.assertEqual(classifier.image_size, 16)
        probs = classifier.model(np.zeros([2, 16, 16, 3], np.float32))
        self.assertAllClose(tf.reduce_sum(probs, -1), [1.0, 1.0])

    def test_missing_model_file(self):
        with self.assertRaisesRegex(ValueError, "model file not found"):
            registry.load_classifier("/nowhere/m.keras")

    def test_damaged_weights_file_is_one_line_naming_it(self):
        path = self.create_tempdir().full_path + "/w.weights.h5"
        registry.load_classifier("resnet50v2", None, 32).model.save_weights(
            path
        )
        truncate_to_half(path)
        self.assert_one_line_error(
            path, "truncated", registry.load_classifier, "resnet50v2", path, 32
        )


class ModelFileChecksTest(OneLineErrorMixin, tf.test.TestCase):
    """A model file whose outputs are not ImageNet probabilities fails at
    load, in one line naming it, before any work."""

    def setUp(self):
        super().setUp()
        self.folder = self.create_tempdir().full_path

    def test_wrong_number_of_classes(self):
        path = save_model(
            self.folder + "/ten.keras",
            keras.layers.Dense(10, activation="softmax"),
        )
        for logits in (False, True):
            self.assert_one_line_error(
                path,
                "[None, 10] is not [B, 1000]",
                registry.load_classifier,
                path,
                logits=logits,
            )

    def test_logits_need_the_logits_flag_which_adds_a_softmax(self):
        path = save_model(
            self.folder + "/logits.keras", keras.layers.Dense(1000)
        )
        self.assert_one_line_error(
            path, "not probabilities", registry.load_classifier, path
        )
        self.assert_one_line_error(
            path, "pass --logits", registry.ModelConfig(path, None).load
        )
        classifier = registry.ModelConfig(path, None, logits=True).load()
        pixels = np.random.default_rng(1).uniform(0, 255, (3, 16, 16, 3))
        logits = keras.saving.load_model(path)(pixels)
        probabilities = classifier.model(pixels)
        self.assertAllClose(probabilities, tf.nn.softmax(logits), atol=1e-6)
        self.assertEqual(classifier.model.input_shape, (None, 16, 16, 3))

    def test_probabilities_with_the_logits_flag(self):
        path = testing_utils.tiny_model_file(self.folder)
        self.assert_one_line_error(
            path, "drop --logits", registry.load_classifier, path, logits=True
        )
        with self.assertRaisesRegex(ValueError, "for model files"):
            registry.ModelConfig("resnet50v2", None, 32, logits=True).load()

    def test_non_negative_scores_that_do_not_sum_to_one(self):
        path = save_model(
            self.folder + "/relu.keras",
            keras.layers.Dense(1000, activation="relu"),
        )
        self.assert_one_line_error(
            path, "not probabilities", registry.load_classifier, path
        )

    def test_two_outputs(self):
        path = save_model(
            self.folder + "/two.keras",
            lambda x: [
                keras.layers.Dense(1000, activation="softmax")(x),
                keras.layers.Dense(1)(x),
            ],
        )
        self.assert_one_line_error(
            path, "one output", registry.load_classifier, path
        )

    def test_input_of_any_size_needs_an_image_size(self):
        path = save_model(
            self.folder + "/any.keras",
            keras.layers.Dense(1000, activation="softmax"),
            input_shape=(None, None, 3),
        )
        self.assert_one_line_error(
            path, "pass --image_size", registry.load_classifier, path
        )
        self.assertEqual(
            registry.load_classifier(path, None, 24).image_size, 24
        )

    def test_image_size_the_model_cannot_take(self):
        path = testing_utils.tiny_model_file(self.folder)
        self.assert_one_line_error(
            path,
            "cannot run on [2, 24, 24, 3]",
            registry.load_classifier,
            path,
            None,
            24,
        )

    def test_damaged_model_file(self):
        path = testing_utils.tiny_model_file(self.folder)
        truncate_to_half(path)
        self.assert_one_line_error(
            path, "damaged or truncated", registry.load_classifier, path
        )

    def test_script_prints_one_error_line_and_exits_2(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [0, 1])
        path = save_model(
            self.folder + "/ten.keras",
            keras.layers.Dense(10, activation="softmax"),
        )
        result = testing_utils.run_module(
            "experiments.run_selectors",
            f"--model={path}",
            f"--data={data}",
            f"--workdir={self.create_tempdir().full_path}",
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],
            f"error: {path}: output shape [None, 10] is not [B, 1000] (one "
            "score per ImageNet class)",
        )


class ModelConfigTest(tf.test.TestCase):
    def test_model_and_weights_files_are_inputs_registry_names_not(self):
        folder = self.create_tempdir().full_path
        path = testing_utils.tiny_model_file(folder)
        weights = os.path.join(folder, "w.weights.h5")
        with open(weights, "wb") as f:
            f.write(b"x")
        self.assertEqual(registry.ModelConfig(path, None).input_files(), [path])
        self.assertEqual(
            registry.ModelConfig("resnet50v2", weights).input_files(), [weights]
        )
        self.assertEmpty(registry.ModelConfig("resnet50v2").input_files())

    def test_load_builds_the_classifier(self):
        path = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        classifier = registry.ModelConfig(path, None).load()
        self.assertEqual(classifier.name, path)
        self.assertEqual(classifier.image_size, 16)


class CenterCropTest(tf.test.TestCase, parameterized.TestCase):
    def test_crop_window_follows_the_tf_efficientnet_rule(self):
        # 10x20, fraction 0.5: side 5, top (10-5+1)//2 = 3, left 8.
        image = np.arange(10 * 20 * 3).reshape(10, 20, 3) % 251
        image = image.astype(np.uint8)
        out = registry.center_crop_and_resize(
            image, image_size=5, crop_fraction=0.5, method="nearest"
        )
        self.assertAllEqual(out, image[3:8, 8:13].astype(np.float32))

    @parameterized.named_parameters(
        ("bilinear", "bilinear"), ("bicubic", "bicubic")
    )
    def test_eager_and_dataset_map_agree(self, method):
        images = [testing_utils.random_image(33, 50, seed=s) for s in (0, 1)]
        eager = [
            registry.center_crop_and_resize(im, 24, 0.875, method)
            for im in images
        ]
        ds = tf.data.Dataset.from_generator(
            lambda: iter(images),
            output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        ).map(lambda im: registry.center_crop_and_resize(im, 24, 0.875, method))
        for expected, got in zip(eager, ds, strict=True):
            self.assertEqual(got.dtype, tf.float32)
            self.assertEqual(got.shape, (24, 24, 3))
            self.assertAllClose(expected, got)
            self.assertBetween(float(tf.reduce_min(got)), 0.0, 255.0)
            self.assertBetween(float(tf.reduce_max(got)), 0.0, 255.0)

    def test_crop_is_central_square_of_shorter_side(self):
        image = np.zeros([10, 20, 3], np.uint8)
        image[:, 5:15] = 200  # The central 10x10 square.
        out = registry.center_crop_and_resize(image, 10, crop_fraction=1.0)
        self.assertAllClose(out, np.full([10, 10, 3], 200.0))

    def test_output_range_and_shape(self):
        image = np.random.default_rng(0).integers(0, 256, [31, 17, 3])
        out = registry.center_crop_and_resize(image.astype(np.uint8), 8)
        self.assertEqual(out.shape, [8, 8, 3])
        self.assertAllInRange(out, 0.0, 255.0)
