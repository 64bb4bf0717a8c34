import os
from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import downloader

from compression_helps.engine import candidates, evaluate
from compression_helps.models import registry
from compression_helps.sources import datasets
from tests import testing_utils

_FEATURES = tfds.features.FeaturesDict(
    {
        "image": tfds.features.Image(encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=1000),
        "file_name": tfds.features.Text(),
    }
)
BOMB_REASON = (
    "too many pixels: 13000x13000 = 169.0 MP > 89.5 MP limit "
    "(raise --max_pixels)"
)


class OfflineDownload(tfds.core.GeneratorBasedBuilder):
    """A data set that TFDS must download (from a port nobody listens on)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=_FEATURES)

    def _split_generators(self, dl_manager):
        path = dl_manager.download("http://127.0.0.1:9/images.zip")
        return {"validation": self._generate_examples(path)}

    def _generate_examples(self, path):
        yield from ()


class ManualDownload(OfflineDownload):
    """A data set whose files are fetched by hand, as ImageNet's."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put images.zip\n  in the manual folder."

    def _split_generators(self, dl_manager):
        path = dl_manager.manual_dir / "images.zip"
        return {"validation": self._generate_examples(path)}


class RealBuilderTest(tf.test.TestCase):
    """A data set prepared by TFDS itself, read back by its real builder."""

    def setUp(self):
        super().setUp()
        self.data_dir = self.create_tempdir().full_path
        self.files = []
        for i, label in enumerate([3, 7, 5]):
            image = testing_utils.random_image(seed=i)
            self.files.append(
                (f"img{i}.JPEG", testing_utils.jpeg_bytes(image), label)
            )
        self.files.insert(
            1,
            (
                "bomb.JPEG",
                testing_utils.image_claiming("jpeg", 13000, 13000),
                4,
            ),
        )
        rows = [
            (name, {"image": data, "label": label, "file_name": name})
            for name, data, label in self.files
        ]
        tfds.dataset_builders.store_as_tfds_dataset(
            name="hostile_tiny",
            version="1.0.0",
            features=_FEATURES,
            split_datasets={"validation": rows},
            data_dir=self.data_dir,
            disable_shuffling=True,
        )

    def test_reads_bytes_as_stored_and_refuses_the_bomb_undecoded(self):
        source = datasets.load("tfds:hostile_tiny", tfds_data_dir=self.data_dir)
        self.assertEqual(source.num_examples, 4)
        self.assertEqual(source.fingerprint["version"], "1.0.0")
        examples = list(source.dataset.as_numpy_iterator())
        self.assertEqual(
            [(e["id"].decode(), int(e["label"])) for e in examples],
            [(name, label) for name, _, label in self.files],
        )
        for e, (name, data, _) in zip(examples, self.files, strict=True):
            if name == "bomb.JPEG":
                self.assertEqual(e["error"].decode(), BOMB_REASON)
                self.assertEqual(e["image_bytes"], b"")
            else:
                self.assertEqual(e["error"], b"")
                self.assertEqual(e["image_bytes"], data)
        skipped = datasets.diagnose(source, 1, lambda e: None)
        self.assertEqual(skipped.reason, BOMB_REASON)
        self.assertEqual(skipped.id, "bomb.JPEG")

    def test_data_config_raises_the_pixel_limit(self):
        config = datasets.DataConfig(
            "tfds:hostile_tiny:validation",
            tfds_data_dir=self.data_dir,
            max_pixels=13000 * 13000,
        )
        errors = [e["error"] for e in config.load().dataset]
        self.assertEqual(errors, [b""] * 4)

    def test_evaluation_skips_the_bomb_with_its_reason(self):
        folder = self.create_tempdir().full_path
        classifier = registry.load_classifier(
            testing_utils.tiny_model_file(folder)
        )
        source = datasets.load("tfds:hostile_tiny", tfds_data_dir=self.data_dir)
        predictions, skipped = evaluate.predict(
            classifier, source, [50], batch_size=2, verbose=False
        )
        self.assertEqual(
            list(predictions.ids), ["img0.JPEG", "img1.JPEG", "img2.JPEG"]
        )
        self.assertEqual(
            [(s.id, s.reason) for s in skipped], [("bomb.JPEG", BOMB_REASON)]
        )


class NotPreparedTest(tf.test.TestCase):
    def test_offline_download_ends_in_one_line_saying_what_to_do(self):
        data_dir = self.create_tempdir().full_path
        # No retries: the refused connection fails at once, not after
        # TFDS' ten retries with back-off (minutes).
        with mock.patch.object(downloader, "MAX_RETRIES", 0):
            with self.assertRaises(OSError) as raised:
                datasets.load("tfds:offline_download", tfds_data_dir=data_dir)
        message = str(raised.exception)
        self.assertNotIn("\n", message)
        self.assertStartsWith(
            message, f"tfds offline_download is not in {data_dir}"
        )
        self.assertIn("tfds build offline_download --data_dir=DIR", message)
        self.assertIn(f"to {data_dir}/offline_download/1.0.0 (or pass", message)

    def test_missing_manual_download_names_the_folder(self):
        data_dir = self.create_tempdir().full_path
        with self.assertRaises(FileNotFoundError) as raised:
            datasets.load("tfds:manual_download", tfds_data_dir=data_dir)
        self.assertEqual(
            str(raised.exception),
            "tfds manual_download needs files downloaded by hand: put them "
            f"in {data_dir}/downloads/manual (Put images.zip in the manual "
            "folder.)",
        )

    def test_unknown_data_set_is_one_line(self):
        with self.assertRaisesRegex(ValueError, "^tfds: .*no_such_set") as e:
            datasets.load("tfds:no_such_set")
        self.assertNotIn("\n", str(e.exception))

    def test_script_says_where_imagenet_goes_without_a_traceback(self):
        data_dir = self.create_tempdir().full_path
        result = testing_utils.run_module(
            "experiments.run_selectors",
            f"--model={testing_utils.tiny_model_file(data_dir)}",
            "--weights=none",
            "--data=tfds:imagenet2012:validation",
            f"--tfds_data_dir={data_dir}",
            f"--workdir={os.path.join(data_dir, 'run')}",
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        errors = [
            line for line in result.stderr.splitlines() if "error:" in line
        ]
        self.assertEqual(
            errors,
            [
                "error: tfds imagenet2012 needs files downloaded by hand: put "
                f"them in {data_dir}/downloads/manual (manual_dir should "
                "contain two files: ILSVRC2012_img_train.tar and "
                "ILSVRC2012_img_val.tar. You need to register on "
                "https://image-net.org/download-images in order to get the "
                "link to download the dataset.)"
            ],
        )


class MockDataTest(tf.test.TestCase):
    """The registered ImageNet builders, with TFDS' fake examples."""

    def test_imagenet2012_validation_without_download(self):
        with tfds.testing.mock_data(num_examples=4):
            source = datasets.load("tfds:imagenet2012:validation")
            examples = list(source.dataset.take(4).as_numpy_iterator())
        self.assertLen(examples, 4)
        self.assertEqual(source.fingerprint["tfds"], "imagenet2012")
        self.assertEqual(source.fingerprint["split"], "validation")
        self.assertIn("version", source.fingerprint)
        for e in examples:
            self.assertBetween(int(e["label"]), 0, 999)
            self.assertNotEmpty(e["id"])
            self.assertEqual(e["error"], b"")
            # The encoded file, decodable by the candidate pipeline.
            image = candidates.decode_image(e["image_bytes"])
            self.assertEqual(image.shape[-1], 3)

    def test_imagenet_v2_default_split_and_limit(self):
        with tfds.testing.mock_data(num_examples=6):
            source = datasets.load("tfds:imagenet_v2", limit=3)
            self.assertIn("imagenet_v2:test[:3]", source.description)
            examples = list(source.dataset.as_numpy_iterator())
        self.assertNotEmpty(examples)
        self.assertTrue(np.all([e["error"] == b"" for e in examples]))
