import dataclasses
import os
from unittest import mock

import numpy as np
import tensorflow as tf

from compression_helps.core import files, rundir
from compression_helps.engine import candidates, evaluate, ranking
from compression_helps.models import registry
from compression_helps.sources import datasets
from tests import testing_utils


@dataclasses.dataclass(frozen=True)
class Settings:
    batch_size: int = 2


class EvaluateTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.folder, [1, 2, 3, 4, 5])

    def classifier(self, **kwargs):
        folder = self.create_tempdir().full_path
        return registry.load_classifier(
            testing_utils.tiny_model_file(folder, **kwargs)
        )

    def test_xla_compiled_step_gives_the_same_ranks(self):
        classifier = self.classifier()
        source = datasets.load(self.folder)
        kwargs = dict(codecs=(70, 20), batch_size=2, verbose=False)
        plain, _ = evaluate.predict(classifier, source, **kwargs)
        xla, _ = evaluate.predict(
            classifier, source, jit_compile=True, **kwargs
        )
        self.assertAllEqual(plain.ranks, xla.ranks)
        self.assertAllEqual(plain.topk, xla.topk)
        self.assertAllClose(plain.topk_probs, xla.topk_probs, atol=1e-5)

    def test_rank_is_one_plus_strictly_higher_classes(self):
        classifier = self.classifier(num_classes=10)
        source = datasets.load(self.folder)
        predictions, _ = evaluate.predict(
            classifier, source, (50,), 2, verbose=False
        )
        # Recompute from the model's full probabilities.
        for i, image_id in enumerate(predictions.ids):
            with open(f"{self.folder}/{image_id}", "rb") as f:
                image = tf.io.decode_jpeg(
                    f.read(), dct_method="INTEGER_ACCURATE"
                )
            pixels = tf.cast(tf.round(classifier.resize(image)), tf.float32)
            probs = classifier.model(pixels[None]).numpy()[0]
            label = predictions.labels[i]
            expected = 1 + int(np.sum(probs > probs[label]))
            self.assertEqual(predictions.ranks[i, 0], expected)
            self.assertAllEqual(predictions.topk[i, 0], np.argsort(-probs)[:5])

    def test_candidate_fields_name_each_codec(self):
        paper = candidates.Codec("paper", 40, candidates.jpeg_codec(40).encode)
        predictions, _ = evaluate.predict(
            self.classifier(),
            datasets.load(self.folder, limit=2),
            (40, paper),
            verbose=False,
        )
        self.assertEqual(
            predictions.names.tolist(), ["original", "qf40", "paper_q40"]
        )
        self.assertEqual(
            predictions.curves.tolist(), ["original", "jpeg", "paper"]
        )
        self.assertAllEqual(predictions.qualities, [0, 40, 40])
        # Same encoder, same files: only the names differ.
        self.assertAllEqual(predictions.sizes[:, 1], predictions.sizes[:, 2])
        self.assertAllEqual(predictions.ranks[:, 1], predictions.ranks[:, 2])

    def test_resumed_run_reads_finished_shards_back(self):
        with open(os.path.join(self.folder, "nolabel.JPEG"), "wb") as f:
            f.write(testing_utils.jpeg_bytes(testing_utils.random_image()))
        classifier = self.classifier()
        source = datasets.load(self.folder)
        workdir = self.create_tempdir().full_path
        kwargs = dict(codecs=(50,), batch_size=2, shard_size=2, verbose=False)
        with rundir.RunDir.open(workdir, "test", Settings()) as run:
            first, first_skipped = evaluate.predict(
                classifier, source, run=run, **kwargs
            )
        self.assertLen(os.listdir(os.path.join(workdir, "shards")), 3)
        self.assertEqual([s.id for s in first_skipped], ["nolabel.JPEG"])
        with (
            rundir.RunDir.open(workdir, "test", Settings(), True) as run,
            mock.patch.object(
                candidates,
                "candidate_batches",
                side_effect=AssertionError("evaluated again"),
            ),
        ):
            again, again_skipped = evaluate.predict(
                classifier, source, run=run, **kwargs
            )
        self.assertEqual(again_skipped, first_skipped)
        for name, array in first.to_arrays().items():
            self.assertAllEqual(getattr(again, name), array, msg=name)

    def test_no_evaluable_image_is_one_line_error(self):
        folder = self.create_tempdir().full_path
        with open(os.path.join(folder, "n01440764_a.JPEG"), "wb") as f:
            f.write(b"not a jpeg")
        with self.assertRaisesRegex(ValueError, "none of 1 images") as e:
            evaluate.predict(
                self.classifier(), datasets.load(folder), (50,), verbose=False
            )
        self.assertIn("cannot decode", str(e.exception))
        self.assertNotIn("\n", str(e.exception))


class PredictionsFileTest(tf.test.TestCase):
    def predictions(self):
        rng = np.random.default_rng(0)
        return ranking.Predictions(
            ranks=rng.integers(1, 1000, (3, 2)).astype(np.int32),
            sizes=rng.integers(100, 900, (3, 2)),
            topk=rng.integers(0, 1000, (3, 2, 5)).astype(np.int32),
            topk_probs=rng.random((3, 2, 5)).astype(np.float32),
            labels=np.array([1, 2, 3], np.int32),
            curves=np.array(["original", "jpeg"]),
            qualities=np.array([0, 50], np.int32),
            ids=np.array(["a", "b", "c"]),
            names=np.array(["original", "qf50"]),
            num_pixels=np.array([10, 20, 30]),
        )

    def test_round_trip_through_npz(self):
        path = os.path.join(self.create_tempdir().full_path, "p.npz")
        predictions = self.predictions()
        files.write_npz(path, predictions.to_arrays())
        loaded = ranking.Predictions.load(path)
        for name, array in predictions.to_arrays().items():
            self.assertAllEqual(getattr(loaded, name), array, msg=name)

    def test_file_of_an_older_version_names_the_missing_fields(self):
        path = os.path.join(self.create_tempdir().full_path, "p.npz")
        arrays = self.predictions().to_arrays()
        del arrays["curves"]
        files.write_npz(path, arrays)
        with self.assertRaisesRegex(ValueError, "no curves"):
            ranking.Predictions.load(path)

    def test_concatenate_keeps_one_copy_of_candidate_fields(self):
        p = self.predictions()
        both = ranking.Predictions.concatenate([p, p])
        self.assertEqual(both.num_images, 6)
        self.assertAllEqual(both.names, p.names)
        self.assertAllEqual(both.ranks, np.concatenate([p.ranks, p.ranks]))
