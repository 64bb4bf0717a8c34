import dataclasses
import json
import os
from unittest import mock

import numpy as np
import tensorflow as tf
from absl import flags
from absl.testing import parameterized

from compression_helps.engine import ranking
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.jobs import rate_accuracy, report
from deepn_jpeg.jpeg import codec, ladder, tables, tables_io, tableset_files
from experiments import common
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
            model=registry.ModelConfig(self.model, weights=None),
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
        result = rate_accuracy.run(config, workdir, verbose=False).report
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
        predictions = ranking.Predictions.load(
            os.path.join(workdir, "predictions.npz")
        )
        heldout = datasets.split(datasets.load(self.data), "heldout", 3)
        self.assertAllEqual(
            predictions.ids,
            [e["id"].decode() for e in heldout.dataset.as_numpy_iterator()],
        )
        self.assertIn("paper_q50", predictions.names.tolist())
        self.assertEqual(predictions.curves[0], "original")
        with open(os.path.join(workdir, "rate_accuracy.json")) as f:
            self.assertEqual(json.load(f)["n_images"], 4)
        with open(os.path.join(workdir, "rate_accuracy.json")) as f:
            verdict = json.load(f)["verdict"]
        self.assertEqual(
            [v["curve"] for v in verdict],
            [c for c in result["curves"] if c not in ("original", "jpeg")],
        )
        self.assertIn("verdict: band gain", report.rate_accuracy_text(result))
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
        ("encoder", dict(encoders=("cjpeg",)), "encoder must be one of"),
        ("no_encoders", dict(encoders=()), "encoders is empty"),
        (
            "repeated_encoders",
            dict(encoders=("mozjpeg", "mozjpeg")),
            "encoders must be distinct",
        ),
        ("unknown_name", dict(tables="nope"), r"nope: .*\(shipped: "),
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
        ("model", dict(model=registry.ModelConfig("nope")), "unknown model"),
        ("no_tables", dict(tables=()), "no tables given"),
        ("missing", dict(tables="/nonexistent/t"), "/nonexistent/t: no such"),
    )
    def test_bad_settings_fail_in_one_line_before_the_model(
        self, change, message
    ):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        with (
            mock.patch.object(registry.ModelConfig, "load") as load,
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
        with mock.patch.object(registry.ModelConfig, "load") as load:
            with self.assertRaisesRegex(
                ValueError,
                f"^{self.tables_file}: not a valid tables file \\({problem}",
            ) as e:
                rate_accuracy.run(
                    self.config(), self.create_tempdir().full_path
                )
        self.assertNotIn("\n", str(e.exception))
        load.assert_not_called()


class EncodersTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, [0, 3, 5, 9])
        self.design = self.create_tempdir().full_path
        write_tables(self.design)
        # A shipped set fixed to mozjpeg and 4:4:4, in a temporary folder
        # that stands for the package's.
        self.shipped = self.create_tempdir().full_path
        luma, chroma = tables.standard_qtables(50)
        tables.save_json(
            os.path.join(self.shipped, "lite.json"),
            np.minimum(luma * 3, 255),
            chroma,
            subsampling="4:4:4",
            encoder="mozjpeg",
        )
        patcher = mock.patch.object(
            tables_io, "_shipped_dir", return_value=self.shipped
        )
        patcher.start()
        self.addCleanup(patcher.stop)
        self.model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path, num_classes=10
        )

    def test_two_encoders_name_their_curves_and_fixed_sets_keep_theirs(self):
        config = rate_accuracy.Config(
            tables=(self.design, "lite"),
            model=registry.ModelConfig(self.model, weights=None),
            data=datasets.DataConfig(self.data),
            qualities=(50, 10),
            encoders=("libjpeg", "mozjpeg"),
            diagnostics=("lite",),
            batch_size=2,
            bootstrap=0,
        )
        workdir = self.create_tempdir().full_path
        result = rate_accuracy.run(config, workdir, verbose=False).report
        self.assertCountEqual(
            result["curves"],
            [
                "original",
                "jpeg",
                "jpeg@mozjpeg",
                "paper",
                "paper@mozjpeg",
                # Only its own encoder, also for its diagnostics.
                "lite-444@mozjpeg",
                "lite-luma-444@mozjpeg",
                "lite-chroma-444@mozjpeg",
                "jpeg-lumascale",
                "jpeg-lumascale@mozjpeg",
                "jpeg-chromascale",
                "jpeg-chromascale@mozjpeg",
            ],
        )
        settings = {
            curve.name("4:2:0"): (curve.subsampling, curve.encoder)
            for curve in rate_accuracy.curves(
                rate_accuracy.check_config(config), config
            )
        }
        self.assertEqual(settings["jpeg"], ("4:2:0", "libjpeg"))
        self.assertEqual(settings["paper@mozjpeg"], ("4:2:0", "mozjpeg"))
        self.assertEqual(settings["lite-444@mozjpeg"], ("4:4:4", "mozjpeg"))
        self.assertEqual(
            settings["lite-luma-444@mozjpeg"], ("4:4:4", "mozjpeg")
        )
        # Same tables: the two encoders' curves have the same qualities.
        self.assertEqual(
            [p["quality"] for p in result["curves"]["jpeg@mozjpeg"]], [50, 10]
        )
        # Standard JPEG by mozjpeg is compared with it by libjpeg.
        self.assertIn("jpeg@mozjpeg", {g["curve"] for g in result["gains"]})
        # The shipped file is an input of the run folder: resumable.
        rate_accuracy.run(config, workdir, resume=True, verbose=False)

    def test_only_mozjpeg_still_writes_the_libjpeg_reference(self):
        config = rate_accuracy.Config(
            tables=self.design, qualities=(50,), encoders=("mozjpeg",)
        )
        tablesets = rate_accuracy.check_config(config)
        self.assertEqual(
            [c.name("4:2:0") for c in rate_accuracy.curves(tablesets, config)],
            ["jpeg", "jpeg@mozjpeg", "paper@mozjpeg"],
        )

    def test_shipped_names_resolve_to_the_package_files(self):
        files = tableset_files.tables_files(["lite", self.design])
        self.assertEqual(list(files), ["lite", "paper"])
        self.assertEqual(files["lite"], os.path.join(self.shipped, "lite.json"))
        luma, _ = tableset_files.load_tablesets("lite")["lite"]
        self.assertEqual(luma[0, 0], 48)
        with self.assertRaisesRegex(FileNotFoundError, r"\(shipped: lite\)"):
            tableset_files.tables_files("nope")

    def test_a_bad_fixed_setting_names_the_file(self):
        path = os.path.join(self.design, "qtables_odd.json")
        luma, chroma = tables.standard_qtables(50)
        tables.save_json(path, luma, chroma, encoder="cjpeg")
        with self.assertRaisesRegex(
            ValueError, f"^{path}: not a valid tables file \\(encoder must"
        ):
            tableset_files.load_tablesets(self.design)

    def test_a_set_name_with_the_encoder_mark_is_refused(self):
        write_tables(self.design, "a@b")
        with self.assertRaisesRegex(ValueError, "'a@b' has '@'"):
            tableset_files.tables_files(self.design)

    def test_encoders_flag_parses(self):
        values = flags.FlagValues()
        config_flags = common.define_config_flags(
            rate_accuracy.Config,
            defaults=rate_accuracy.Config(tables=None),
            required=("tables",),
            flag_values=values,
        )
        values(["prog", "--tables=lite", "--encoders=libjpeg,mozjpeg"])
        config = config_flags.value()
        self.assertEqual(config.encoders, ("libjpeg", "mozjpeg"))
        self.assertEqual(config.tables, ("lite",))
        self.assertEqual(rate_accuracy.Config().encoders, ("libjpeg",))


class TablesTest(tf.test.TestCase):
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
        found = tableset_files.load_tablesets(folder)
        self.assertEqual(list(found), ["paper", "monotone", "fit-plm-qf50"])
        with self.assertRaisesRegex(ValueError, "two table sets"):
            tableset_files.load_tablesets((folder, folder))
        with self.assertRaisesRegex(FileNotFoundError, "no such"):
            tableset_files.load_tablesets(folder + "/missing")
        write_tables(folder, "jpeg")
        with self.assertRaisesRegex(ValueError, "'jpeg' is reserved"):
            tableset_files.load_tablesets(folder)

    def test_table_codec_names_its_curve_and_quality(self):
        luma, chroma = tables.standard_qtables(30)
        table_codec = ladder.table_codec("paper", 30, luma, chroma)
        self.assertEqual(table_codec.name, "paper_q30")
        self.assertEqual(
            (table_codec.curve, table_codec.quality), ("paper", 30)
        )
        jpeg = table_codec.encode(testing_utils.random_image())
        self.assertEqual(jpeg.dtype, tf.string)
        mozjpeg = ladder.table_codec(
            "paper@mozjpeg", 30, luma, chroma, "4:4:4", "mozjpeg"
        )
        self.assertEqual(mozjpeg.name, "paper@mozjpeg_q30")
        image = testing_utils.random_image()
        self.assertEqual(
            mozjpeg.encode(image).numpy(),
            codec.encode(image, luma, chroma, "4:4:4", encoder="mozjpeg"),
        )
        with self.assertRaisesRegex(ValueError, "encoder must be one of"):
            ladder.table_codec("p", 30, luma, chroma, "4:2:0", "x")


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
