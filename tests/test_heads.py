import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.models import registry
from compression_helps.multi_input import heads, network
from tests import testing_utils

QUALITIES = (90, 10)  # V = 3: keeps the tests fast.
NAMES = ("original", "qf90", "qf10")
SIZE = 32


def backbone_probabilities(classifier, images_uint8):
    pixels = classifier.preprocess_input(tf.cast(images_uint8, tf.float32))
    return classifier.model(pixels, training=False)


def classifier_and_heads(kinds=heads.HEADS, head_init="backbone"):
    keras.utils.set_random_seed(0)
    classifier = registry.load_classifier("efficientnet_lite0", None, SIZE)
    extractor, dense = network.split_classifier(classifier.model)
    built = [
        heads.build(kind, 3, int(extractor.output.shape[-1]), dense, head_init)
        for kind in kinds
    ]
    return classifier, built


class StepZeroTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*heads.HEADS)
    def test_every_head_starts_at_the_backbone_on_the_original(self, kind):
        classifier, (head,) = classifier_and_heads([kind])
        model = network.build_multi_input_model(
            classifier, QUALITIES, head=head
        )
        # Every candidate different: only the original may matter at step 0.
        inputs = testing_utils.random_uint8_inputs(SIZE, NAMES, 2, 0)
        self.assertAllClose(
            model(inputs, training=False),
            backbone_probabilities(classifier, inputs["original"]),
            atol=1e-5,
            rtol=0,
        )

    def test_trainable_weights(self):
        _, built = classifier_and_heads()
        counts = {h.name: h.count_params() for h in built}
        trainable = {
            h.name: sum(int(np.prod(w.shape)) for w in h.trainable_weights)
            for h in built
        }
        features, classes = 1280, 1000
        self.assertEqual(
            trainable,
            {
                "multi_input": 3 * features * classes + classes,
                "single_input": features * classes + classes,
                # One weight per candidate and a bias per class.
                "mixing": 3 + classes,
            },
        )
        # The mixing head keeps the backbone's classifier, frozen.
        self.assertEqual(
            counts["mixing"] - trainable["mixing"], features * classes + classes
        )

    def test_random_init_leaves_the_backbone(self):
        _, (head,) = classifier_and_heads(["single_input"], "random")
        _, (start,) = classifier_and_heads(["single_input"])
        rows = np.random.default_rng(0).random((2, 3, 1280), np.float32)
        self.assertNotAllClose(head(rows), start(rows))

    def test_unknown_head_raises(self):
        with self.assertRaisesRegex(ValueError, "head must be one of"):
            classifier_and_heads(["ensemble"])


class TrainingModelTest(tf.test.TestCase):
    def test_training_together_equals_training_each_alone(self):
        # Disjoint weights and a summed loss: one fit gives each head the
        # updates it would get alone, on the same batches.
        rng = np.random.default_rng(0)
        rows = rng.random((24, 3, 1280), np.float32)
        labels = rng.integers(0, 4, 24)

        def fit(model, targets):
            model.compile(
                keras.optimizers.Adam(1e-3),
                loss={
                    name: keras.losses.SparseCategoricalCrossentropy()
                    for name in targets
                },
            )
            batches = tf.data.Dataset.from_tensor_slices(
                (rows, {name: labels for name in targets})
            ).batch(8)
            model.fit(batches, epochs=2, verbose=0, shuffle=False)

        _, together = classifier_and_heads()
        fit(heads.training_model(together), heads.HEADS)
        for i, kind in enumerate(heads.HEADS):
            _, (alone,) = classifier_and_heads([kind])
            single = keras.Model(alone.input, {kind: alone.output})
            fit(single, [kind])
            with self.subTest(kind):
                self.assertAllClose(
                    together[i](rows), alone(rows), atol=1e-6, rtol=1e-5
                )
                self.assertNotAllClose(  # It did train.
                    together[i](rows), classifier_and_heads([kind])[1][0](rows)
                )


class SerializationTest(tf.test.TestCase):
    def test_mixing_head_saves_and_loads(self):
        _, (head,) = classifier_and_heads(["mixing"])
        head.get_layer("mix").weights_per_candidate.assign([0.5, 0.3, 0.2])
        path = self.create_tempdir().full_path + "/mixing.keras"
        head.save(path)
        loaded = keras.saving.load_model(path)
        rows = np.random.default_rng(0).random((2, 3, 1280), np.float32)
        self.assertAllClose(loaded(rows), head(rows))


if __name__ == "__main__":
    tf.test.main()
