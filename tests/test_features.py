import os

import numpy as np
import tensorflow as tf

from compression_helps.core import imagenet
from compression_helps.models import registry
from compression_helps.multi_input import features, network
from compression_helps.sources import datasets
from tests import testing_utils

QUALITIES = (90, 10)  # V = 3: keeps the tests fast.


class FeaturesTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.classifier = registry.load_classifier(
            testing_utils.tiny_model_file(self.create_tempdir().full_path)
        )
        self.model = network.build_multi_input_model(self.classifier, QUALITIES)
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [0, 2, 4, 6, 8])
        self.source = datasets.load(folder)
        self.path = os.path.join(
            self.create_tempdir().full_path, features.FEATURES_FILE
        )

    def _cache(self, dataset, **kwargs):
        return features.cache_features(
            self.path,
            self.model,
            dataset,
            self.classifier.resize,
            QUALITIES,
            batch_size=2,
            verbose=False,
            **kwargs,
        )

    def test_head_on_cached_features_equals_the_full_model(self):
        cached = self._cache(self.source.dataset)
        self.assertEqual(cached["features"].shape, (5, 3, 4))
        self.assertAllEqual(cached["labels"], [0, 2, 4, 6, 8])
        self.assertAllEqual(cached["index"], range(5))
        self.assertEqual(
            cached["ids"].tolist(),
            [f"{imagenet.wnids()[2 * i]}_{i}.JPEG" for i in range(5)],
        )
        # A random head, so that every slice matters, then compare.
        head = self.model.get_layer("head")
        network.init_head(head, head_init="random", seed=0)
        full = np.concatenate(
            [
                self.model.predict_on_batch(inputs)
                for inputs, _ in network.make_dataset(
                    self.source.dataset, self.classifier.resize, QUALITIES, 2
                )
            ]
        )
        self.assertAllClose(
            head.predict_on_batch(cached["features"]), full, atol=1e-5
        )

    def test_cache_is_reused_only_for_the_same_key(self):
        key_a = features.features_key(QUALITIES, fingerprint="a")
        first = self._cache(self.source.dataset, key=key_a)
        # An empty data set: only the cache can give the same arrays.
        empty = self.source.dataset.take(0)
        again = self._cache(empty, key=key_a)
        for name in first:
            self.assertAllEqual(again[name], first[name])
        # Other images (another fingerprint): computed again.
        key_b = features.features_key(QUALITIES, fingerprint="b")
        other = self._cache(empty, key=key_b)
        self.assertEqual(other["features"].shape, (0, 3, 4))
        self.assertEqual(other["ids"].shape, (0,))

    def test_damaged_cache_is_computed_again(self):
        with open(self.path, "wb") as f:
            f.write(b"PK\x03\x04 cut short")
        cached = self._cache(self.source.dataset)
        self.assertEqual(cached["features"].shape, (5, 3, 4))
        again = self._cache(self.source.dataset.take(0))  # Now readable.
        self.assertAllEqual(again["features"], cached["features"])

    def test_without_write_nothing_is_written(self):
        self._cache(self.source.dataset, write=False)
        self.assertFalse(os.path.exists(self.path))

    def test_data_service_gives_the_same_features_in_index_order(self):
        dispatcher, _workers = testing_utils.start_data_service(2)
        args = (self.model, self.source.dataset, self.classifier.resize)
        local = features.compute_features(*args, QUALITIES, 2, verbose=False)
        remote = features.compute_features(
            *args, QUALITIES, 2, data_service=dispatcher.target, verbose=False
        )
        self.assertAllClose(remote["features"], local["features"], atol=1e-5)
        for name in ("labels", "index", "ids"):
            self.assertAllEqual(remote[name], local[name])

    def test_trainable_backbone_cannot_be_cached(self):
        self.model = network.build_multi_input_model(
            self.classifier, QUALITIES, trainable=True
        )
        with self.assertRaisesRegex(ValueError, "frozen"):
            self._cache(self.source.dataset)


class FeaturesKeyTest(tf.test.TestCase):
    def test_differs_by_qualities_and_dependencies(self):
        key = features.features_key(QUALITIES, fingerprint={"digest": "a"})
        self.assertEqual(
            key, features.features_key(QUALITIES, fingerprint={"digest": "a"})
        )
        self.assertNotEqual(
            key, features.features_key(QUALITIES, fingerprint={"digest": "b"})
        )
        self.assertNotEqual(
            key, features.features_key((90,), fingerprint={"digest": "a"})
        )


if __name__ == "__main__":
    tf.test.main()
