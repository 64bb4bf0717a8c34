import dataclasses
import glob
import json
import os
from unittest import mock

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.models import registry
from compression_helps.multi_input import distribute, train
from compression_helps.sources import datasets
from tests import testing_utils

QUALITIES = (90, 10)  # V = 3: keeps the tests fast.
NAMES = ["original", "qf90", "qf10"]


def summary_tags(log_dir):
    tags = set()
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


class ConfigTest(tf.test.TestCase, parameterized.TestCase):
    def test_unknown_optimizer_raises(self):
        with self.assertRaisesRegex(ValueError, "optimizer"):
            train.make_optimizer("rmsprop", 0.1)

    def test_smoke_config_keeps_the_data(self):
        config = train.smoke_config(
            train.Config(data=datasets.DataConfig("/images"))
        )
        self.assertEqual(config.data, datasets.DataConfig("/images", limit=8))
        self.assertEqual(
            config.model, registry.ModelConfig("resnet50v2", None, 32)
        )


class TrainAndEvaluateTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [0, 2, 4, 6, 8, 10])
        self.data = folder
        self.config = train.Config(
            model=registry.ModelConfig(
                testing_utils.tiny_model_file(self.create_tempdir().full_path)
            ),
            data=datasets.DataConfig(folder),
            qualities=QUALITIES,
            num_eval=2,
            batch_size=2,
            learning_rate=0.01,
        )

    def _train(self, workdir, resume=False, **changes):
        config = dataclasses.replace(self.config, **changes)
        return train.train_and_evaluate(
            config, workdir, resume=resume, verbose=False
        )

    def test_settings_are_checked_before_any_work(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        cases = [
            ({"head_init": "zeros"}, "head_init"),
            ({"optimizer": "rmsprop"}, "optimizer"),
            ({"strategy": "horovod"}, "strategy"),
            ({"qualities": (50, 500)}, r"\[1, 100\]"),
            ({"epochs": 0}, "epochs must be >= 1, got 0"),
            ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
            ({"batch_size": -3}, "batch_size must be >= 1, got -3"),
            ({"learning_rate": 0.0}, "learning_rate must be > 0"),
            ({"eval_fraction": 1.0}, r"eval_fraction must be in \(0, 1\)"),
            ({"num_eval": 0}, "num_eval must be >= 1"),
            ({"num_cpu_devices": -1}, "num_cpu_devices must be >= 0"),
            ({"data": datasets.DataConfig("x", limit=-1)}, "limit must be"),
            ({"data": datasets.DataConfig("x", limit=0)}, "limit must be"),
            ({"data_service": "http://host:1"}, "grpc://host:port"),
            ({"heads": ()}, "heads: give one or more"),
            ({"heads": ("multi_input", "ensemble")}, "head must be one of"),
            ({"heads": ("mixing", "mixing")}, "heads must be distinct"),
            ({"train_backbone": True}, "train_backbone trains the backbone"),
            ({"eval_data": "/other"}, "leave num_eval unset"),
            ({"eval_data": ""}, "eval_data is empty"),
        ]
        for changes, message in cases:
            with (
                self.subTest(message),
                mock.patch.object(distribute, "make_strategy") as strategy,
                mock.patch.object(datasets.DataConfig, "load") as load,
            ):
                with self.assertRaisesRegex(ValueError, message) as e:
                    self._train(workdir, **changes)
                self.assertNotIn("\n", str(e.exception))
                strategy.assert_not_called()
                load.assert_not_called()
                self.assertFalse(os.path.exists(workdir), changes)
        # Checked against the images: after the settings, before the model.
        for changes, message in [
            ({"num_eval": 6}, "cannot hold out"),
            ({"data": datasets.DataConfig("/nowhere")}, "/nowhere"),
            ({"eval_data": "/nowhere", "num_eval": None}, "/nowhere"),
            (
                {"eval_data": self.data + "/", "num_eval": None},
                "holds the same images as data",
            ),
        ]:
            with mock.patch.object(registry.ModelConfig, "load") as load:
                with self.assertRaisesRegex((ValueError, OSError), message):
                    self._train(workdir, **changes)
            load.assert_not_called()
            self.assertFalse(os.path.exists(workdir), changes)

    def test_non_chief_worker_reads_the_chiefs_features_and_writes_nothing(
        self,
    ):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        chief = self._train(workdir, epochs=1)

        def snapshot():
            return {
                os.path.join(folder, name): os.stat(
                    os.path.join(folder, name)
                ).st_mtime_ns
                for folder, _, names in os.walk(workdir)
                for name in names
            }

        before = snapshot()
        with mock.patch.object(distribute, "is_chief", return_value=False):
            results = self._train(workdir, epochs=1)
        self.assertEqual(snapshot(), before)
        self.assertEqual(results["scores"], chief["scores"])
        # Without the chief's features there is nothing to read.
        with (
            mock.patch.object(distribute, "is_chief", return_value=False),
            self.assertRaisesRegex(ValueError, "chief's workdir"),
        ):
            self._train(os.path.join(workdir, "elsewhere"), epochs=1)

    def test_trains_on_images_through_the_data_service(self):
        dispatcher, _workers = testing_utils.start_data_service()
        workdir = self.create_tempdir().full_path
        results = self._train(
            workdir,
            epochs=1,
            cache_features=False,
            data_service=dispatcher.target,
        )
        self.assertEqual((results["num_train"], results["num_eval"]), (4, 2))
        self.assertFalse(os.path.exists(os.path.join(workdir, "features.npz")))
        self.assertLen(read_lines(os.path.join(workdir, "metrics.jsonl")), 1)


class EvalDataTest(tf.test.TestCase):
    def test_trains_on_one_source_and_scores_every_head_on_the_other(self):
        train_folder = self.create_tempdir().full_path
        eval_folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(train_folder, [0, 2, 4, 6, 8, 10])
        testing_utils.write_image_folder(eval_folder, [0, 2, 4], seed=100)
        workdir = self.create_tempdir().full_path
        results = train.train_and_evaluate(
            train.Config(
                model=registry.ModelConfig(
                    testing_utils.tiny_model_file(
                        self.create_tempdir().full_path
                    )
                ),
                data=datasets.DataConfig(train_folder),
                eval_data=eval_folder,
                qualities=QUALITIES,
                batch_size=2,
                epochs=2,
                learning_rate=0.01,
            ),
            workdir,
            verbose=False,
        )
        self.assertEqual((results["num_train"], results["num_eval"]), (6, 3))
        eval_ids = sorted(os.listdir(eval_folder))
        self.assertEqual(sorted(results["eval_ids"]), eval_ids)
        # The two sources never mix: each cache holds its own images only.
        cached = {
            name: set(np.load(os.path.join(workdir, name))["ids"])
            for name in ("features.npz", "eval_features.npz")
        }
        self.assertEqual(cached["eval_features.npz"], set(eval_ids))
        self.assertEqual(cached["features.npz"], set(os.listdir(train_folder)))
        self.assertEqual(results["classes_present"], [0, 2, 4, 6, 8, 10])
        self.assertEqual(
            set(results["scores"]),
            {"backbone", "multi_input", "single_input", "mixing"},
        )
        self.assertEqual(
            set(results["versus_single_input"]), {"multi_input", "mixing"}
        )
        for scores in results["scores"].values():
            self.assertEqual(
                set(scores), {"top1", "top5", "top1_present", "top5_present"}
            )
        gain = results["versus_single_input"]["multi_input"]["top1"]
        low, high = gain["interval"]
        self.assertLessEqual(low, gain["gain"])
        self.assertLessEqual(gain["gain"], high)
        # Per-epoch held-out top-1 of every head, and its plot.
        rows = read_lines(os.path.join(workdir, "metrics.jsonl"))
        self.assertEqual([row["epoch"] for row in rows], [1, 2])
        for head in ("multi_input", "single_input", "mixing"):
            self.assertIn(f"val_{head}_top1", rows[0])
        self.assertTrue(
            os.path.exists(os.path.join(workdir, "heldout_top1_per_epoch.png"))
        )
        exported = keras.saving.load_model(os.path.join(workdir, "model.keras"))
        self.assertEqual(
            [layer.name for layer in exported.layers][-1],
            results["exported_head"],
        )


class ReadConfigTest(tf.test.TestCase):
    def test_not_a_training_workdir(self):
        folder = self.create_tempdir().full_path
        with self.assertRaisesRegex(FileNotFoundError, "not a training"):
            train.read_config(folder)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"job": "run_selectors", "settings": {}}, f)
        with self.assertRaisesRegex(ValueError, "not a train_multi_input"):
            train.read_config(folder)


class ScriptTest(tf.test.TestCase):
    def test_mirrored_on_two_cpu_devices_trains_the_full_model(self):
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [0, 2, 4, 6, 8, 10])
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        workdir = self.create_tempdir().full_path
        result = testing_utils.run_module(
            "experiments.train_multi_input",
            f"--model={model}",
            f"--data={folder}",
            "--qualities=90,10",
            "--num_eval=2",
            "--batch_size=4",
            "--epochs=1",
            "--strategy=mirrored",
            "--num_cpu_devices=2",
            "--nocache_features",
            f"--workdir={workdir}",
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(workdir, "results.json")) as f:
            results = json.load(f)
        self.assertEqual(results["num_replicas"], 2)
        self.assertEqual(results["inputs"], NAMES)
        self.assertEqual((results["num_train"], results["num_eval"]), (4, 2))
        self.assertFalse(os.path.exists(os.path.join(workdir, "features.npz")))
        with open(os.path.join(workdir, "config.json")) as f:
            settings = json.load(f)["settings"]
        self.assertEqual(settings["data"]["name"], folder)
        self.assertEqual(settings["qualities"], list(QUALITIES))


if __name__ == "__main__":
    tf.test.main()
