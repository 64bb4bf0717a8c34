import dataclasses
import os

import numpy as np
import tensorflow as tf

from compression_helps import datasets, evaluate, models
from tests import testing_utils


class DataServiceTest(tf.test.TestCase):
    def test_two_local_workers_give_the_single_process_results(self):
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, list(range(0, 40, 3)))
        with open(os.path.join(folder, "n01440764_bad.JPEG"), "wb") as f:
            f.write(b"not a jpeg")
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        classifier = models.load_classifier(model)
        source = datasets.load(folder)
        kwargs = dict(
            codecs=(80, 30), batch_size=3, shard_size=5, verbose=False
        )

        local, local_skipped = evaluate.predict(classifier, source, **kwargs)

        dispatcher, workers = testing_utils.start_data_service(2)
        remote, remote_skipped = evaluate.predict(
            classifier, source, data_service=dispatcher.target, **kwargs
        )
        del workers

        self.assertEqual(local_skipped, remote_skipped)
        self.assertLen(local_skipped, 1)
        for field in dataclasses.fields(evaluate.Predictions):
            np.testing.assert_array_equal(
                getattr(local, field.name),
                getattr(remote, field.name),
                err_msg=field.name,
            )
