import dataclasses
import json
import os
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps import datasets, evaluate, models, splits
from deepn_jpeg import comparison, rate_accuracy, report, tables
from tests import testing_utils


def write_tables(folder, name="paper", factor=2):
    luma, chroma = tables.standard_qtables(50)
    path = os.path.join(folder, f"qtables_{name}.json")
    tables.save_json(
        path, np.minimum(luma * factor, 255), np.minimum(chroma * factor, 255)
    )
    return path


class RunTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, [0, 3, 5, 9, 1, 2, 7, 8])
        self.design = self.create_tempdir().full_path
        self.tables_file = write_tables(self.design)
        self.model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path, num_classes=10
        )

    def config(self, **kwargs):
        defaults = dict(
            tables=self.design,
            model=models.ModelConfig(self.model, weights=None),
            data=datasets.DataConfig(self.data, split="heldout", split_seed=3),
            qualities=(90, 50, 10),
            batch_size=2,
            bootstrap=0,
        )
        return rate_accuracy.Config(**{**defaults, **kwargs})

    def test_tiny_end_to_end_on_the_heldout_half(self):
        workdir = self.create_tempdir().full_path
        config = self.config(
            diagnostics=("paper",), gain_drops=(0.0, 2.0), bootstrap=20
        )
        result = rate_accuracy.run(config, workdir, verbose=False)
        self.assertEqual(
            set(result["curves"]),
            {
                "original",
                "jpeg",
                "paper",
                "paper-luma",
                "paper-chroma",
                "jpeg-lumascale",
                "jpeg-chromascale",
            },
        )
        self.assertLen(result["curves"]["jpeg"], 3)
        self.assertLen(result["gains"], 2 * 5)
        # Same quality, coarser tables: smaller files.
        for jpeg, deepn in zip(
            result["curves"]["jpeg"], result["curves"]["paper"], strict=True
        ):
            self.assertEqual(jpeg["quality"], deepn["quality"])
            self.assertLess(deepn["bytes"], jpeg["bytes"])
        # Only the held-out half was evaluated.
        predictions = evaluate.Predictions.load(
            os.path.join(workdir, "predictions.npz")
        )
        heldout = splits.split(datasets.load(self.data), "heldout", 3)
        self.assertAllEqual(
            predictions.ids,
            [e["id"].decode() for e in heldout.dataset.as_numpy_iterator()],
        )
        self.assertIn("paper_q50", predictions.names.tolist())
        self.assertEqual(predictions.curves[0], "original")
        with open(os.path.join(workdir, "rate_accuracy.json")) as f:
            self.assertEqual(json.load(f)["n_images"], 4)
        self.assertTrue(
            os.path.exists(os.path.join(workdir, "rate_accuracy.png"))
        )
        self.assertTrue(os.path.exists(os.path.join(workdir, "errors.jsonl")))
        self.assertIn("| paper-luma |", report.rate_accuracy_text(result))

    def test_resume_refuses_a_new_tables_file_in_the_folder(self):
        workdir = self.create_tempdir().full_path
        rate_accuracy.run(self.config(), workdir, verbose=False)
        write_tables(self.design, "other")
        with self.assertRaisesRegex(ValueError, "input files changed"):
            rate_accuracy.run(self.config(), workdir, True, verbose=False)

    @parameterized.named_parameters(
        ("subsampling", dict(subsampling="4:1:1"), "subsampling must be"),
        ("bootstrap", dict(bootstrap=-1), "bootstrap must be >= 0"),
        ("drops", dict(gain_drops=(1.0, 1.0)), "gain_drops must be"),
        ("nan_drop", dict(gain_drops=(float("nan"),)), "gain_drops must be"),
        ("no_drops", dict(gain_drops=()), "gain_drops is empty"),
        ("quality", dict(qualities=(90, 101)), r"qualities must be in \[1"),
        ("repeated", dict(qualities=(50, 50)), "repeated JPEG qualities"),
        ("diagnostics", dict(diagnostics=("nope",)), "not table sets"),
        ("batch", dict(batch_size=0), "batch_size must be >= 1"),
        ("negative_batch", dict(batch_size=-1), "batch_size must be >= 1"),
        ("shard", dict(shard_size=0), "shard_size must be >= 1"),
        ("negative_shard", dict(shard_size=-4), "shard_size must be >= 1"),
        ("limit", dict(data=datasets.DataConfig("x", limit=-1)), "limit must"),
        (
            "no_limit",
            dict(data=datasets.DataConfig("x", limit=0)),
            "limit must",
        ),
        ("model", dict(model=models.ModelConfig("nope")), "unknown model"),
        ("no_tables", dict(tables=()), "no tables given"),
        ("missing", dict(tables="/nonexistent/t"), "/nonexistent/t: no such"),
    )
    def test_bad_settings_fail_in_one_line_before_the_model(
        self, change, message
    ):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        with (
            mock.patch.object(models.ModelConfig, "load") as load,
            mock.patch.object(datasets.DataConfig, "load") as read,
        ):
            with self.assertRaisesRegex((ValueError, OSError), message) as e:
                rate_accuracy.run(self.config(**change), workdir)
        self.assertNotIn("\n", str(e.exception))
        load.assert_not_called()
        read.assert_not_called()
        self.assertFalse(os.path.exists(workdir))

    @parameterized.named_parameters(
        ("not_json", "{luma: ", "not JSON: Expecting"),
        ("bad_step", 0, r"luma: baseline qtable entries must be in \[1, 255\]"),
        ("string_step", "x", "luma: qtable entries must be integers, got 'x'"),
        ("no_step", None, "luma: qtable entries must be integers, got None"),
        ("not_tables", '{"format": "other"}', "not a deepn_jpeg.qtables/1"),
        ("a_list", "[1, 2]", "not a deepn_jpeg.qtables/1"),
    )
    def test_bad_tables_file_fails_in_one_line_before_the_model(
        self, text, problem
    ):
        if not isinstance(text, str) or not text.startswith(("{", "[")):
            luma, chroma = tables.standard_qtables(50)
            document = json.loads(tables.to_json(luma, chroma))
            document["luma"][0][0] = text
            text = json.dumps(document)
        with open(self.tables_file, "w") as f:
            f.write(text)
        with mock.patch.object(models.ModelConfig, "load") as load:
            with self.assertRaisesRegex(
                ValueError,
                f"^{self.tables_file}: not a valid tables file \\({problem}",
            ) as e:
                rate_accuracy.run(
                    self.config(), self.create_tempdir().full_path
                )
        self.assertNotIn("\n", str(e.exception))
        load.assert_not_called()


class TablesTest(tf.test.TestCase):
    def test_gain_intervals_need_a_resample(self):
        # bootstrap < 0 used to end a whole evaluation in a KeyError.
        with self.assertRaisesRegex(ValueError, "num_resamples must be >= 1"):
            comparison.gain_intervals(None, (0.0,), -1)

    def test_diagnostic_curves_mix_the_tables(self):
        luma = np.full([8, 8], 7, np.int32)
        chroma = np.full([8, 8], 200, np.int32)
        result = rate_accuracy.curve_tables(
            {"paper": (luma, chroma)}, 50, ("paper",), diagnostic_quality=90
        )
        std_luma, std_chroma = tables.standard_qtables(50)
        self.assertAllEqual(result["jpeg"][0], std_luma)
        self.assertAllEqual(result["paper-luma"][0], luma)
        self.assertAllEqual(result["paper-luma"][1], std_chroma)
        self.assertAllEqual(result["paper-chroma"][0], std_luma)
        self.assertAllEqual(result["paper-chroma"][1], chroma)
        fixed_luma, fixed_chroma = tables.standard_qtables(90)
        self.assertAllEqual(result["jpeg-lumascale"][0], std_luma)
        self.assertAllEqual(result["jpeg-lumascale"][1], fixed_chroma)
        self.assertAllEqual(result["jpeg-chromascale"][0], fixed_luma)
        self.assertAllEqual(result["jpeg-chromascale"][1], std_chroma)

    def test_folders_give_every_tables_file_paper_first(self):
        folder = self.create_tempdir().full_path
        for name in ("fit-plm-qf50", "monotone", "paper"):
            write_tables(folder, name)
        found = rate_accuracy.load_tablesets(folder)
        self.assertEqual(list(found), ["paper", "monotone", "fit-plm-qf50"])
        with self.assertRaisesRegex(ValueError, "two table sets"):
            rate_accuracy.load_tablesets((folder, folder))
        with self.assertRaisesRegex(FileNotFoundError, "no such"):
            rate_accuracy.load_tablesets(folder + "/missing")
        write_tables(folder, "jpeg")
        with self.assertRaisesRegex(ValueError, "'jpeg' is reserved"):
            rate_accuracy.load_tablesets(folder)

    def test_table_codec_names_its_curve_and_quality(self):
        luma, chroma = tables.standard_qtables(30)
        table_codec = rate_accuracy.table_codec("paper", 30, luma, chroma)
        self.assertEqual(table_codec.name, "paper_q30")
        self.assertEqual(
            (table_codec.curve, table_codec.quality), ("paper", 30)
        )
        jpeg = table_codec.encode(testing_utils.random_image())
        self.assertEqual(jpeg.dtype, tf.string)


class ScriptTest(tf.test.TestCase):
    def test_smoke(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [0, 1, 2])
        design = self.create_tempdir().full_path
        write_tables(design)
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        workdir = self.create_tempdir().full_path
        result = testing_utils.run_module(
            "experiments.eval_deepn_jpeg",
            f"--tables={design}",
            f"--model={model}",
            "--weights=none",
            f"--data={data}",
            f"--workdir={workdir}",
            "--qualities=50,10",
            "--bootstrap=0",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("| paper | 50 |", result.stdout)
        with open(os.path.join(workdir, "config.json")) as f:
            settings = json.load(f)["settings"]
        self.assertEqual(settings["tables"], [design])
        self.assertEqual(settings["qualities"], [50, 10])
        self.assertEqual(
            settings["data"], dataclasses.asdict(datasets.DataConfig(data))
        )
