import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.engine import candidates
from compression_helps.models import registry
from compression_helps.multi_input import network
from compression_helps.sources import datasets
from tests import testing_utils

QUALITIES = (90, 10)  # V = 3: keeps the tests fast.
NAMES = ("original", "qf90", "qf10")
TINY_SIZE = 16


def tiny_classifier_file(folder, num_classes=1000, seed=0):
    """A `.keras` classifier shaped like the registry's: pool, dropout, dense.

    Float [0, 255] inputs (model files normalise inside, see `models`).
    """
    keras.utils.set_random_seed(seed)
    pixels = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(pixels)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(0.5)(x)
    probabilities = keras.layers.Dense(
        num_classes,
        activation="softmax",
        name="predictions",
        bias_initializer=keras.initializers.RandomNormal(seed=seed),
    )(x)
    path = os.path.join(folder, "tiny.keras")
    keras.Model(pixels, probabilities).save(path)
    return path


def random_inputs(size, batch=2, names=NAMES, seed=0):
    return testing_utils.random_uint8_inputs(size, names, batch, seed)


def backbone_probabilities(classifier, images_uint8):
    pixels = classifier.preprocess_input(tf.cast(images_uint8, tf.float32))
    return classifier.model(pixels, training=False)


def image_folder(test, num_images=6):
    folder = test.create_tempdir().full_path
    testing_utils.write_image_folder(folder, list(range(0, 2 * num_images, 2)))
    return folder


class InputNamesTest(tf.test.TestCase):
    def test_original_then_one_input_per_quality(self):
        self.assertEqual(
            network.input_names(),
            ("original",) + tuple(f"qf{q}" for q in candidates.QUALITIES),
        )
        self.assertEqual(network.input_names(QUALITIES), NAMES)

    def test_repeated_quality_raises(self):
        with self.assertRaises(ValueError):
            network.input_names((50, 50))


class PreprocessTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("resnet50v2", "resnet50v2"), ("inception_v3", "inception_v3")
    )
    def test_matches_registry_preprocess_input(self, name):
        images = random_inputs(8, names=["x"])["x"]
        layer = network.Preprocess(name)
        expected = registry.REGISTRY[name]().preprocess_input(
            tf.cast(images, tf.float32)
        )
        got = layer(images)
        self.assertEqual(got.dtype, tf.float32)
        self.assertEqual(got.shape, images.shape)
        self.assertAllClose(got, expected)

    def test_none_only_casts(self):
        images = random_inputs(4, names=["x"])["x"]
        self.assertAllEqual(network.Preprocess()(images), images)

    def test_output_shape(self):
        inputs = keras.Input((5, 7, 3), dtype="uint8")
        outputs = network.Preprocess("resnet50v2")(inputs)
        self.assertEqual(outputs.shape, (None, 5, 7, 3))
        self.assertEqual(outputs.dtype, "float32")

    def test_gradient_is_finite(self):
        pixels = tf.constant(np.linspace(0, 255, 48).reshape(1, 4, 4, 3))
        pixels = tf.cast(pixels, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            loss = tf.reduce_sum(network.Preprocess("resnet50v2")(pixels))
        gradient = tape.gradient(loss, pixels)
        self.assertAllEqual(tf.math.is_finite(gradient), tf.ones_like(pixels))
        self.assertAllClose(gradient, tf.fill(pixels.shape, 1 / 127.5))

    def test_can_be_saved_within_functional_model(self):
        inputs = keras.Input((4, 4, 3), dtype="uint8")
        model = keras.Model(inputs, network.Preprocess("resnet50v2")(inputs))
        path = os.path.join(self.create_tempdir().full_path, "m.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        self.assertEqual(loaded.layers[-1].model, "resnet50v2")
        images = random_inputs(4, names=["x"])["x"]
        self.assertAllClose(loaded(images), model(images))

    def test_unknown_model_raises(self):
        with self.assertRaisesRegex(ValueError, "unknown model"):
            network.Preprocess("alexnet")


class SplitClassifierTest(tf.test.TestCase):
    def test_features_skip_the_dropout(self):
        path = tiny_classifier_file(self.create_tempdir().full_path)
        model = keras.saving.load_model(path)
        extractor, dense = network.split_classifier(model)
        self.assertIs(dense, model.layers[-1])
        self.assertEqual(extractor.output.shape, (None, 8))
        self.assertNotIn(
            "Dropout", [type(layer).__name__ for layer in extractor.layers]
        )
        self.assertIs(
            extractor.get_layer("avg_pool"), model.get_layer("avg_pool")
        )

    def test_rejects_a_model_without_softmax_dense_on_top(self):
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        with self.assertRaisesRegex(ValueError, "softmax Dense"):
            network.split_classifier(model)


_BACKBONES = [
    ("resnet50v2", "resnet50v2", 32),
    ("inception_v3", "inception_v3", 75),  # Its smallest input.
    ("efficientnet_lite0", "efficientnet_lite0", 32),
]


class BuildTest(tf.test.TestCase, parameterized.TestCase):
    def _classifier(self, name, size):
        keras.utils.set_random_seed(0)
        return registry.load_classifier(name, None, size)

    @parameterized.named_parameters(*_BACKBONES)
    def test_step_0_reproduces_the_backbone_on_the_original(self, name, size):
        classifier = self._classifier(name, size)
        model = network.build_multi_input_model(classifier)
        names = network.input_names()
        self.assertLen(model.inputs, 11)
        for tensor, input_name in zip(model.inputs, names, strict=True):
            self.assertEqual(tensor.dtype, "uint8")
            self.assertEqual(tensor.shape, (None, size, size, 3))
            self.assertEqual(model.get_layer(input_name).name, input_name)
        self.assertEqual(model.output.shape, (None, 1000))
        # One shared, frozen backbone: only the new head trains.
        self.assertLen(
            [layer for layer in model.layers if layer.name == "backbone"], 1
        )
        self.assertFalse(model.get_layer("backbone").trainable)
        head = model.get_layer("head")
        self.assertEqual(
            [v.path for v in model.trainable_weights],
            [v.path for v in head.trainable_weights],
        )
        # Every candidate different: only the original may matter at step 0.
        inputs = random_inputs(size, names=names)
        want = backbone_probabilities(classifier, inputs["original"])
        self.assertAllClose(
            model(inputs, training=False),  # Eager: faster than tracing.
            want,
            atol=1e-5,
            rtol=0,
        )
        backbone = network.backbone_alone(classifier)
        self.assertAllClose(
            backbone(inputs["original"], training=False),
            want,
            atol=1e-6,
            rtol=0,
        )

    def test_step_0_with_imagenet_weights_on_real_photos(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        classifier = registry.load_classifier("efficientnet_lite0", "imagenet")
        model = network.build_multi_input_model(classifier)
        files = [tf.io.read_file(p) for p in testing_utils.sample_paths(4)]
        dataset = network.make_dataset(
            tf.data.Dataset.from_tensor_slices(
                {"image_bytes": tf.stack(files), "label": tf.zeros(4, tf.int32)}
            ),
            classifier.resize,
            batch_size=4,
        )
        inputs, _ = next(iter(dataset))
        self.assertAllClose(
            model(inputs, training=False),
            backbone_probabilities(classifier, inputs["original"]),
            atol=1e-5,
            rtol=0,
        )

    def test_trainable_backbone(self):
        classifier = self._classifier("resnet50v2", 32)
        model = network.build_multi_input_model(
            classifier, QUALITIES, trainable=True
        )
        self.assertTrue(model.get_layer("backbone").trainable)
        self.assertGreater(
            len(model.trainable_weights),
            len(model.get_layer("head").trainable_weights),
        )

    def test_random_head_differs_from_the_backbone(self):
        classifier = self._classifier("resnet50v2", 32)
        model = network.build_multi_input_model(
            classifier, QUALITIES, head_init="random", seed=1
        )
        kernel = model.get_layer("head").get_layer("classifier").kernel
        self.assertGreater(np.abs(kernel.numpy()[2048:]).max(), 0)
        inputs = random_inputs(32)
        self.assertNotAllClose(
            model(inputs, training=False),
            backbone_probabilities(classifier, inputs["original"]),
        )

    def test_unknown_head_init_raises(self):
        classifier = self._classifier("resnet50v2", 32)
        with self.assertRaisesRegex(ValueError, "head_init"):
            network.build_multi_input_model(
                classifier, QUALITIES, head_init="zeros"
            )


class HeadTest(tf.test.TestCase):
    def test_backbone_init_copies_the_classifier_into_the_original_slice(self):
        dense = keras.layers.Dense(5, activation="softmax")
        dense.build((None, 4))
        dense.bias.assign(np.arange(5, dtype=np.float32))
        head = network.build_head(3, 4, 5)
        network.init_head(head, dense)
        kernel = head.get_layer("classifier").kernel.numpy()
        self.assertAllEqual(kernel[:4], dense.kernel.numpy())
        self.assertAllEqual(kernel[4:], np.zeros((8, 5)))
        self.assertAllEqual(head.get_layer("classifier").bias, dense.bias)

    def test_shape_mismatch_raises(self):
        dense = keras.layers.Dense(6, activation="softmax")
        dense.build((None, 4))
        with self.assertRaisesRegex(ValueError, "does not fit"):
            network.init_head(network.build_head(3, 4, 5), dense)

    def test_given_head_is_the_models_head(self):
        classifier = registry.load_classifier(
            tiny_classifier_file(self.create_tempdir().full_path)
        )
        head = network.build_head(3, 8, 1000)
        model = network.build_multi_input_model(
            classifier, QUALITIES, head=head
        )
        self.assertIs(model.get_layer("head"), head)


class DataTest(tf.test.TestCase):
    def test_batches_of_named_uint8_inputs_and_labels(self):
        source = datasets.load(image_folder(self, 5))
        resize = registry.center_crop_and_resize
        dataset = network.make_dataset(
            source.dataset,
            lambda image: resize(image, TINY_SIZE),
            QUALITIES,
            batch_size=2,
        )
        inputs_spec, label_spec = dataset.element_spec
        self.assertEqual(tuple(inputs_spec), NAMES)
        for spec in inputs_spec.values():
            self.assertEqual(spec.dtype, tf.uint8)
            self.assertEqual(spec.shape[1:], (TINY_SIZE, TINY_SIZE, 3))
        self.assertEqual(label_spec.dtype, tf.int32)
        batches = list(dataset)
        self.assertEqual([len(labels) for _, labels in batches], [2, 2, 1])
        labels = np.concatenate([labels for _, labels in batches])
        self.assertAllEqual(labels, [0, 2, 4, 6, 8])
        # Same pixels as the candidate code, image by image (eager).
        for i, example in enumerate(source.dataset.take(2)):
            want = candidates.make_candidates(
                example, lambda image: resize(image, TINY_SIZE), QUALITIES
            )["pixels"]
            for v, name in enumerate(NAMES):
                self.assertAllEqual(batches[0][0][name][i], want[v])

    def test_to_inputs_eager_and_in_dataset_map_agree(self):
        pixels = random_inputs(4, batch=6, names=["p"])["p"].reshape(
            2, 3, 4, 4, 3
        )
        eager = network.to_inputs({"pixels": pixels}, NAMES)
        mapped = next(
            iter(
                tf.data.Dataset.from_tensors({"pixels": pixels}).map(
                    lambda batch: network.to_inputs(batch, NAMES)
                )
            )
        )
        for v, name in enumerate(NAMES):
            self.assertAllEqual(eager[name], pixels[:, v])
            self.assertAllEqual(mapped[name], eager[name])

    def test_training_shuffles_with_seed(self):
        source = datasets.load(image_folder(self, 6))

        def labels(seed):
            dataset = network.make_dataset(
                source.dataset,
                lambda image: registry.center_crop_and_resize(image, 8),
                (50,),
                batch_size=6,
                training=True,
                seed=seed,
            )
            return next(iter(dataset))[1].numpy().tolist()

        self.assertEqual(labels(3), labels(3))
        self.assertCountEqual(labels(3), [0, 2, 4, 6, 8, 10])


class OneStepTest(tf.test.TestCase):
    def test_one_step_trains_only_the_head(self):
        classifier = registry.load_classifier(
            tiny_classifier_file(self.create_tempdir().full_path)
        )
        model = network.build_multi_input_model(classifier, QUALITIES)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss="sparse_categorical_crossentropy",
        )
        backbone = [w.numpy() for w in model.get_layer("backbone").weights]
        head = [w.numpy() for w in model.get_layer("head").weights]
        source = datasets.load(image_folder(self, 4))
        dataset = network.make_dataset(
            source.dataset, classifier.resize, QUALITIES, batch_size=4
        )
        inputs, labels = next(iter(dataset))
        loss = model.train_on_batch(inputs, labels)
        self.assertTrue(np.isfinite(loss))
        for before, after in zip(
            backbone, model.get_layer("backbone").weights, strict=True
        ):
            self.assertAllEqual(before, after)  # BN statistics included.
        changed = [
            not np.array_equal(before, after)
            for before, after in zip(
                head, model.get_layer("head").weights, strict=True
            )
        ]
        self.assertAllEqual(changed, [True, True])


if __name__ == "__main__":
    tf.test.main()
