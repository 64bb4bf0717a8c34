import json
import os

import numpy as np
import tensorflow as tf

from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.jobs import ship
from deepn_jpeg.jpeg import codec, tables
from tests import testing_utils


class ShipTest(tf.test.TestCase):
    def test_writes_a_self_contained_table_set(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, list(range(8)))
        model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path, num_classes=8
        )
        workdir = self.create_tempdir().full_path
        config = ship.Config(
            model=registry.ModelConfig(model, weights=None),
            data=datasets.DataConfig(data),
            method="fit-sensitivity",
            name="tiny",
            encoder="mozjpeg",
            fit_images=6,
            fit_trials=2,
            batch_size=4,
        )
        path = ship.run(config, workdir, verbose=False)
        self.assertEqual(path, os.path.join(workdir, "tiny.json"))
        shipped = tables.load_tableset(path)
        self.assertEqual(shipped.encoder, "mozjpeg")
        self.assertEqual(shipped.subsampling, "4:2:0")
        # The search's best tables, as written by the fit job.
        fitted = os.path.join(
            workdir, "design", "fit", "qtables_fit-sensitivity-qf50.json"
        )
        luma, chroma = tables.load_json(fitted)
        self.assertAllEqual(shipped.luma, luma)
        self.assertAllEqual(shipped.chroma, chroma)
        with open(path) as f:
            meta = json.load(f)["metadata"]
        self.assertEqual(meta["method"], "fit-sensitivity")
        image = testing_utils.random_image(seed=3)
        written = codec.encode(image, tables=path, scale=50)
        self.assertAllEqual(codec.read_qtables(written)[0], luma)
        self.assertEqual(
            tf.io.decode_jpeg(written).shape, np.asarray(image).shape
        )

    def test_a_path_as_name_is_refused(self):
        with self.assertRaisesRegex(ValueError, "plain file name"):
            ship.check_config(ship.Config(name="a/b"))
