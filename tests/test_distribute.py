import keras
import numpy as np
import tensorflow as tf

from compression_helps.multi_input import distribute
from tests import testing_utils


class DistributeTest(tf.test.TestCase):
    def test_unknown_strategy_raises(self):
        with self.assertRaisesRegex(ValueError, "strategy"):
            distribute.make_strategy("horovod")

    def test_default_strategy_is_the_chief_and_predicts_like_keras(self):
        strategy = distribute.make_strategy()
        self.assertTrue(distribute.is_chief(strategy))
        model = keras.saving.load_model(
            testing_utils.tiny_model_file(self.create_tempdir().full_path)
        )
        images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3))
        self.assertAllClose(
            distribute.predict_batch(model, images),
            model.predict_on_batch(images),
        )


if __name__ == "__main__":
    tf.test.main()
