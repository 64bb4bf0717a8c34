import numpy as np
import tensorflow as tf

from compression_helps import datasets, evaluate, models
from tests import testing_utils
from tests.test_models import tiny_classifier_file


class EvaluateOptionsTest(tf.test.TestCase):
    def test_xla_compiled_step_gives_the_same_ranks(self):
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [1, 2, 3, 4, 5])
        model = tiny_classifier_file(
            self.create_tempdir().full_path + "/m.keras"
        )
        classifier = models.load_classifier(model)
        source = datasets.load(folder)
        kwargs = dict(qualities=(70, 20), batch_size=2, verbose=False)
        plain, _ = evaluate.predict(classifier, source, **kwargs)
        xla, _ = evaluate.predict(
            classifier, source, jit_compile=True, **kwargs
        )
        self.assertAllEqual(plain.ranks, xla.ranks)
        self.assertAllEqual(plain.topk, xla.topk)
        self.assertAllClose(plain.topk_probs, xla.topk_probs, atol=1e-5)

    def test_rank_is_one_plus_strictly_higher_classes(self):
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [3, 9])
        model = tiny_classifier_file(
            self.create_tempdir().full_path + "/m.keras", num_classes=10
        )
        classifier = models.load_classifier(model)
        predictions, _ = evaluate.predict(
            classifier, datasets.load(folder), (50,), 2, verbose=False
        )
        # Recompute from the model's full probabilities.
        for i, image_id in enumerate(predictions.ids):
            with open(f"{folder}/{image_id}", "rb") as f:
                image = tf.io.decode_jpeg(
                    f.read(), dct_method="INTEGER_ACCURATE"
                )
            pixels = tf.cast(tf.round(classifier.resize(image)), tf.float32)
            probs = classifier.model(pixels[None]).numpy()[0]
            label = predictions.labels[i]
            expected = 1 + int(np.sum(probs > probs[label]))
            self.assertEqual(predictions.ranks[i, 0], expected)
            self.assertAllEqual(predictions.topk[i, 0], np.argsort(-probs)[:5])
