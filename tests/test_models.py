import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps import models
from tests import testing_utils


class RegistryTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(("inception_v3", 299), ("resnet50v2", 224))
    def test_keras_applications_build_at_their_own_size(self, name, size):
        classifier = models.load_classifier(name, weights=None)
        self.assertEqual(classifier.image_size, size)
        self.assertEqual(classifier.model.input_shape, (None, size, size, 3))
        self.assertEqual(classifier.num_classes, 1000)

    def test_resnet50v2_at_299_as_the_authors_used(self):
        classifier = models.load_classifier("resnet50v2", None, image_size=299)
        self.assertEqual(classifier.model.input_shape, (None, 299, 299, 3))
        image = tf.zeros([400, 300, 3], tf.uint8)
        self.assertEqual(classifier.resize(image).shape, [299, 299, 3])

    def test_unknown_model_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, "unknown model 'vgg99'"):
            models.load_classifier("vgg99")

    def test_offline_imagenet_weights_name_file_place_and_checksum(self):
        spec = models.REGISTRY["resnet50v2"]()
        offline = dataclasses.replace(
            spec,
            imagenet_weights=models.KerasWeights(
                "not_cached_weights_for_test.h5",
                "http://127.0.0.1:9/not_cached_weights_for_test.h5",
                "0123456789abcdef0123456789abcdef",
            ),
        )
        with self.assertRaises(models.WeightsError) as e:
            models._fetch_keras_weights(offline)
        message = str(e.exception)
        self.assertNotIn("\n", message)
        self.assertIn("not_cached_weights_for_test.h5", message)
        self.assertIn("0123456789abcdef0123456789abcdef", message)
        self.assertIn("models/", message)

    def test_missing_weights_file(self):
        with self.assertRaisesRegex(models.WeightsError, "not found"):
            models.load_classifier("resnet50v2", "/nowhere/w.h5", 32)

    def test_weights_of_another_architecture(self):
        path = self.create_tempdir().full_path + "/other.weights.h5"
        keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(2)]
        ).save_weights(path)
        with self.assertRaisesRegex(models.WeightsError, "cannot load"):
            models.load_classifier("resnet50v2", path, 32)

    def test_model_file(self):
        path = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        classifier = models.load_classifier(path)
        self.assertEqual(classifier.image_size, 16)
        probs = classifier.model(np.zeros([2, 16, 16, 3], np.float32))
        self.assertAllClose(tf.reduce_sum(probs, -1), [1.0, 1.0])

    def test_missing_model_file(self):
        with self.assertRaisesRegex(ValueError, "model file not found"):
            models.load_classifier("/nowhere/m.keras")


class ModelConfigTest(tf.test.TestCase):
    def test_model_and_weights_files_are_inputs_registry_names_not(self):
        folder = self.create_tempdir().full_path
        path = testing_utils.tiny_model_file(folder)
        weights = os.path.join(folder, "w.weights.h5")
        with open(weights, "wb") as f:
            f.write(b"x")
        self.assertEqual(models.ModelConfig(path, None).input_files(), [path])
        self.assertEqual(
            models.ModelConfig("resnet50v2", weights).input_files(), [weights]
        )
        self.assertEmpty(models.ModelConfig("resnet50v2").input_files())

    def test_load_builds_the_classifier(self):
        path = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        classifier = models.ModelConfig(path, None).load()
        self.assertEqual(classifier.name, path)
        self.assertEqual(classifier.image_size, 16)


class CenterCropTest(tf.test.TestCase, parameterized.TestCase):
    def test_crop_window_follows_the_tf_efficientnet_rule(self):
        # 10x20, fraction 0.5: side 5, top (10-5+1)//2 = 3, left 8.
        image = np.arange(10 * 20 * 3).reshape(10, 20, 3) % 251
        image = image.astype(np.uint8)
        out = models.center_crop_and_resize(
            image, image_size=5, crop_fraction=0.5, method="nearest"
        )
        self.assertAllEqual(out, image[3:8, 8:13].astype(np.float32))

    @parameterized.named_parameters(
        ("bilinear", "bilinear"), ("bicubic", "bicubic")
    )
    def test_eager_and_dataset_map_agree(self, method):
        images = [testing_utils.random_image(33, 50, seed=s) for s in (0, 1)]
        eager = [
            models.center_crop_and_resize(im, 24, 0.875, method)
            for im in images
        ]
        ds = tf.data.Dataset.from_generator(
            lambda: iter(images),
            output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        ).map(lambda im: models.center_crop_and_resize(im, 24, 0.875, method))
        for expected, got in zip(eager, ds, strict=True):
            self.assertEqual(got.dtype, tf.float32)
            self.assertEqual(got.shape, (24, 24, 3))
            self.assertAllClose(expected, got)
            self.assertBetween(float(tf.reduce_min(got)), 0.0, 255.0)
            self.assertBetween(float(tf.reduce_max(got)), 0.0, 255.0)

    def test_crop_is_central_square_of_shorter_side(self):
        image = np.zeros([10, 20, 3], np.uint8)
        image[:, 5:15] = 200  # The central 10x10 square.
        out = models.center_crop_and_resize(image, 10, crop_fraction=1.0)
        self.assertAllClose(out, np.full([10, 10, 3], 200.0))

    def test_output_range_and_shape(self):
        image = np.random.default_rng(0).integers(0, 256, [31, 17, 3])
        out = models.center_crop_and_resize(image.astype(np.uint8), 8)
        self.assertEqual(out.shape, [8, 8, 3])
        self.assertAllInRange(out, 0.0, 255.0)
