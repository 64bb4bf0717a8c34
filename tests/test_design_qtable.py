import contextlib
import dataclasses
import io
import json
import os

import numpy as np
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver, parameterized

from compression_helps.core import files, rundir
from compression_helps.sources import datasets
from deepn_jpeg.analysis import image_sums, statistics
from deepn_jpeg.jobs import design, report
from deepn_jpeg.jpeg import codec, tables
from experiments import design_qtable
from tests import testing_utils


def config_for(folder, **changes):
    return design.Config(data=datasets.DataConfig(folder), **changes)


def qtables_path(workdir, name, extension):
    return os.path.join(workdir, tables.qtables_filename(name, extension))


def run_main(*argv):
    """design_qtable's main in-process: (exit status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    status = 0
    with (
        flagsaver.flagsaver(),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        flags.FLAGS(["design_qtable", *argv])
        try:
            design_qtable.main(["design_qtable"])
        except SystemExit as e:
            status = e.code
    return status, stdout.getvalue(), stderr.getvalue()


def image_folder(test, labels=(0, 0, 0, 2, 4)):
    # <wnid>_<i>.JPEG files of the given classes.
    folder = test.create_tempdir().full_path
    testing_utils.write_image_folder(folder, list(labels))
    return folder


def new_workdir(test):
    return os.path.join(test.create_tempdir().full_path, "run")


class DesignTest(tf.test.TestCase):
    def test_run_writes_statistics_tables_and_plot(self):
        workdir = new_workdir(self)
        config = config_for(image_folder(self), per_class=2, seed=0)
        result = design.run(config, workdir, verbose=False)

        self.assertEqual(result.statistics.num_images, 4)  # 2 + 1 + 1.
        stats = statistics.BandStatistics.load(
            os.path.join(workdir, design.STATISTICS_FILE)
        )
        self.assertAllEqual(stats.sums, result.statistics.sums)
        self.assertEqual(set(result.qtables), set(tables.PLM_VARIANTS))
        for variant, (luma, chroma) in result.qtables.items():
            self.assertAllEqual(luma, tables.plm(stats.std("luma"), variant))
            self.assertAllEqual(
                chroma, tables.plm(stats.std("chroma"), variant)
            )
            got = tables.load_json(qtables_path(workdir, variant, "json"))
            self.assertAllEqual(got[0], luma)
            self.assertAllEqual(got[1], chroma)
            with open(qtables_path(workdir, variant, "txt")) as f:
                got = tables.read_cjpeg_qtables(f.read())
            self.assertAllEqual(got[0], luma)
            self.assertAllEqual(got[1], chroma)
            # The tables make a valid file.
            jpeg = codec.encode(testing_utils.random_image(), luma, chroma)
            self.assertAllEqual(codec.read_qtables(jpeg)[0], luma)
        self.assertIn("luma table, PLM monotone:", result.summary)
        self.assertIn("JPEG chroma table, QF 50:", result.summary)
        record = files.read_json(os.path.join(workdir, rundir.CONFIG_FILE))
        self.assertEqual(record["job"], design.JOB)
        self.assertEqual(record["settings"]["per_class"], 2)
        self.assertEqual(record["settings"]["plm"]["c"], 240.0)
        with open(os.path.join(workdir, design.PLOT_FILE), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        with open(os.path.join(workdir, design.SUMMARY_FILE)) as f:
            self.assertEqual(f.read(), result.summary + "\n")
        self.assertEqual(rundir.count_errors(workdir), {})

    def test_fit_split_uses_only_the_fit_half(self):
        data = datasets.DataConfig(image_folder(self), split="fit")
        config = design.Config(data=data, per_class=None)
        result = design.run(config, new_workdir(self), verbose=False)
        self.assertEqual(result.statistics.num_images, 2)  # 5 // 2.

    def test_monotone_metadata_records_derived_c(self):
        workdir = new_workdir(self)
        config = config_for(
            image_folder(self),
            variants=("monotone",),
            plm=tables.PlmParams(b=90.0),
        )
        result = design.run(config, workdir, verbose=False)
        self.assertEqual(list(result.qtables), ["monotone"])
        with open(qtables_path(workdir, "monotone", "json")) as f:
            metadata = json.load(f)["metadata"]
        self.assertEqual(metadata["plm"]["c"], 90.0 + 2 * 60.0)
        self.assertFalse(os.path.exists(qtables_path(workdir, "paper", "json")))


class SettingsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("unknown_variant", {"variants": ("zigzag",)}, "variant"),
        ("no_variant", {"variants": ()}, "at least one"),
        ("repeated_variant", {"variants": ("paper", "paper")}, "repeat"),
        ("zero_per_class", {"per_class": 0}, "per_class"),
        ("chroma", {"chroma_subsampling": "4:1:1"}, "chroma_subsampling"),
        ("reference_quality", {"reference_quality": 101}, "reference_qual"),
        ("shard_size", {"shard_size": 0}, "shard_size"),
        ("plm", {"plm": tables.PlmParams(t1=70.0)}, "t1 <= t2"),
        ("split", {"data": datasets.DataConfig("x", split="x")}, "split"),
        ("limit", {"data": datasets.DataConfig("x", limit=0)}, "limit"),
        ("negative_limit", {"data": datasets.DataConfig("x", limit=-1)}, "lim"),
        ("negative_shard_size", {"shard_size": -1}, "shard_size must be >="),
    )
    def test_bad_settings_are_refused_before_any_data_pass(self, change, msg):
        # A folder that does not exist: the settings are checked first.
        config = dataclasses.replace(config_for("/nonexistent"), **change)
        workdir = new_workdir(self)
        with self.assertRaisesRegex(ValueError, msg) as raised:
            design.run(config, workdir, verbose=False)
        self.assertLen(str(raised.exception).splitlines(), 1)
        self.assertFalse(os.path.exists(workdir))


class SelectPerClassTest(tf.test.TestCase):
    def test_at_most_per_class_and_all_unlabelled(self):
        labels = np.array([0] * 10 + [7] * 3 + [-1] * 4 + [999])
        chosen = image_sums.select_per_class(labels, per_class=2, seed=0)
        kept = labels[chosen].tolist()
        self.assertEqual(kept.count(0), 2)
        self.assertEqual(kept.count(7), 2)
        self.assertEqual(kept.count(-1), 4)
        self.assertEqual(kept.count(999), 1)
        self.assertAllEqual(chosen, np.sort(chosen))

    def test_seeded_and_deterministic(self):
        labels = np.zeros(50, int)
        a = image_sums.select_per_class(labels, per_class=5, seed=3)
        self.assertAllEqual(
            a, image_sums.select_per_class(labels, per_class=5, seed=3)
        )
        b = image_sums.select_per_class(labels, per_class=5, seed=4)
        self.assertNotAllEqual(a, b)
        self.assertNotAllEqual(a, np.arange(5))  # Random, not the first.

    def test_rejects_zero_per_class(self):
        with self.assertRaises(ValueError):
            image_sums.select_per_class(np.zeros(3, int), per_class=0)


class ReportTest(tf.test.TestCase):
    def test_plot_with_one_variant(self):
        stats = statistics.BandStatistics(
            1,
            [1, 1, 1],
            np.zeros((3, 8, 8)),
            np.tile(np.linspace(1, 1e4, 64).reshape(8, 8), (3, 1, 1)),
        )
        qtables = {"paper": design.design_tables(stats)}
        path = os.path.join(self.create_tempdir().full_path, "p.png")
        report.plot_design(path, stats, qtables, reference_quality=75)
        self.assertGreater(os.path.getsize(path), 1000)
        text = report.design_summary(stats, qtables, reference_quality=75)
        self.assertIn("1 images, 1 luma and 2 chroma 8x8 blocks", text)
        self.assertIn("JPEG luma table, QF 75:", text)
        self.assertNotIn("monotone", text)


class DesignReliabilityTest(tf.test.TestCase):
    def test_bad_images_are_skipped_and_recorded(self):
        data = image_folder(self, [0, 2, 4])
        for name, content in [
            ("n01440764_empty.JPEG", b""),
            ("n01440764_junk.JPEG", b"junk"),
        ]:
            with open(os.path.join(data, name), "wb") as f:
                f.write(content)
        workdir = new_workdir(self)
        config = config_for(data, per_class=None, shard_size=2)
        result = design.run(config, workdir, verbose=False)
        self.assertEqual(result.statistics.num_images, 3)
        with open(os.path.join(workdir, rundir.ERRORS_FILE)) as f:
            records = [json.loads(line) for line in f]
        self.assertEqual(
            sorted(
                (os.path.basename(r["path"]), r["reason"].split(":")[0])
                for r in records
            ),
            [
                ("n01440764_empty.JPEG", "empty file"),
                ("n01440764_junk.JPEG", "cannot decode"),
            ],
        )
        self.assertLen(result.skipped, 2)
        self.assertIn("2 images skipped", result.summary)
        # A resumed run reads the skipped images back from the shards.
        resumed = design.run(config, workdir, resume=True, verbose=False)
        self.assertEqual(resumed.skipped, result.skipped)

    def test_no_decodable_image_is_one_line(self):
        data = self.create_tempdir().full_path
        with open(os.path.join(data, "n01440764_junk.JPEG"), "wb") as f:
            f.write(b"junk")
        workdir = new_workdir(self)
        with self.assertRaisesRegex(ValueError, "no image has a whole"):
            design.run(config_for(data), workdir, verbose=False)
        self.assertEqual(rundir.count_errors(workdir), {"cannot decode": 1})


class ScriptTest(tf.test.TestCase):
    def test_script_smoke(self):
        data = image_folder(self)
        workdir = new_workdir(self)
        result = testing_utils.run_module(
            "experiments.design_qtable",
            f"--data={data}",
            f"--workdir={workdir}",
            "--per_class=1",
            "--variant=paper",
            "--plm_q_min=7",
            "--smoke",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("3 images", result.stdout)
        self.assertIn("luma table, PLM paper:", result.stdout)
        luma, chroma = tables.load_json(qtables_path(workdir, "paper", "json"))
        self.assertGreaterEqual(min(luma.min(), chroma.min()), 7)

    def test_flags_make_the_config(self):
        data = image_folder(self)
        workdir = new_workdir(self)
        status, out, err = run_main(
            f"--data={data}",
            f"--workdir={workdir}",
            "--per_class=0",
            "--variant=monotone",
            "--plm_b=90",
            "--split=fit",
            "--limit=4",
            "--chroma_subsampling=4:2:0",
        )
        self.assertEqual(status, 0, err)
        self.assertIn("2 images", out)  # The fit half of the first 4.
        settings = files.read_json(os.path.join(workdir, "config.json"))[
            "settings"
        ]
        self.assertIsNone(settings["per_class"])
        self.assertEqual(settings["variants"], ["monotone"])
        self.assertEqual(settings["plm"]["b"], 90.0)
        self.assertEqual(settings["chroma_subsampling"], "4:2:0")
        self.assertEqual(
            settings["data"],
            dataclasses.asdict(
                datasets.DataConfig(data, limit=4, split="fit", split_seed=0)
            ),
        )

    def test_usage_errors_are_one_line_with_status_2(self):
        data = image_folder(self)
        a_file = self.create_tempfile().full_path
        cases = [
            ([f"--data={data}", "--per_class=-1"], "per_class"),
            ([f"--data={data}", "--plm_t1=70"], "t1 <= t2"),
            ([f"--data={data}", "--chroma_subsampling=4:1:1"], "chroma"),
            ([f"--data={data}", "--shard_size=0"], "shard_size"),
            ([f"--data={data}", "--split=half"], "split"),
            (["--data=/nonexistent/images"], "not a directory"),
        ]
        for argv, message in cases:
            workdir = new_workdir(self)
            status, _, err = run_main(*argv, f"--workdir={workdir}")
            self.assertEqual(status, 2, (argv, err))
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertStartsWith(err, "error: ")
            self.assertIn(message, err)
        status, _, err = run_main(f"--data={data}", f"--workdir={a_file}/x")
        self.assertEqual(status, 2, err)
        self.assertIn("cannot create the --workdir folder", err)
        with self.assertRaises(flags.IllegalFlagValueError):
            run_main(f"--data={data}", "--workdir=w", "--variant=zigzag")
