import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from deepn_jpeg import codec, design, statistics, tables
from tests import testing_utils


def run_script(*flags):
    return testing_utils.run_module("experiments.design_qtable", *flags)


class DesignTest(tf.test.TestCase):
    def image_folder(self):
        # <wnid>_<i>.JPEG files: classes 0, 0, 0, 2, 4.
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [0, 0, 0, 2, 4])
        return folder

    def test_run_writes_statistics_tables_and_plot(self):
        data = self.image_folder()
        workdir = os.path.join(self.create_tempdir().full_path, "new")
        config = design.Config(data=data, per_class=2, seed=0)
        result = design.run(config, workdir)

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
            got = tables.load_json(
                design.qtables_path(workdir, variant, "json")
            )
            self.assertAllEqual(got[0], luma)
            self.assertAllEqual(got[1], chroma)
            with open(design.qtables_path(workdir, variant, "txt")) as f:
                got = tables.read_cjpeg_qtables(f.read())
            self.assertAllEqual(got[0], luma)
            self.assertAllEqual(got[1], chroma)
            # The tables make a valid file.
            jpeg = codec.encode(testing_utils.random_image(), luma, chroma)
            self.assertAllEqual(codec.read_qtables(jpeg)[0], luma)
        self.assertIn("luma table, PLM monotone:", result.summary)
        self.assertIn("JPEG chroma table, QF 50:", result.summary)
        with open(os.path.join(workdir, design.CONFIG_FILE)) as f:
            self.assertEqual(json.load(f)["per_class"], 2)
        with open(os.path.join(workdir, design.PLOT_FILE), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_fit_split_uses_only_the_fit_half(self):
        data = self.image_folder()
        workdir = self.create_tempdir().full_path
        config = design.Config(data=data, per_class=None, split="fit")
        result = design.run(config, workdir)
        self.assertEqual(result.statistics.num_images, 2)  # 5 // 2.

    def test_monotone_metadata_records_derived_c(self):
        workdir = self.create_tempdir().full_path
        config = design.Config(
            data=self.image_folder(),
            variants=("monotone",),
            plm=tables.PlmParams(b=90.0),
        )
        result = design.run(config, workdir)
        self.assertEqual(list(result.qtables), ["monotone"])
        path = design.qtables_path(workdir, "monotone", "json")
        with open(path) as f:
            metadata = json.load(f)["metadata"]
        self.assertEqual(metadata["plm"]["c"], 90.0 + 2 * 60.0)
        self.assertFalse(
            os.path.exists(design.qtables_path(workdir, "paper", "json"))
        )

    def test_unknown_variant(self):
        config = design.Config(data="unused", variants=("zigzag",))
        with self.assertRaisesRegex(ValueError, "variant"):
            design.run(config, self.create_tempdir().full_path)

    def test_script_smoke(self):
        data = self.image_folder()
        workdir = self.create_tempdir().full_path
        result = run_script(
            f"--data={data}",
            f"--workdir={workdir}",
            "--per_class=1",
            "--variant=paper",
            "--plm_q_min=7",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("3 images", result.stdout)
        self.assertIn("luma table, PLM paper:", result.stdout)
        luma, chroma = tables.load_json(
            design.qtables_path(workdir, "paper", "json")
        )
        self.assertGreaterEqual(min(luma.min(), chroma.min()), 7)

    def test_script_reports_a_missing_folder(self):
        workdir = self.create_tempdir().full_path
        result = run_script(
            "--data=/nonexistent/images", f"--workdir={workdir}"
        )
        self.assertEqual(result.returncode, 2)
        self.assertIn("not a directory", result.stderr)


class PlotTest(tf.test.TestCase):
    def test_plot_with_one_variant(self):
        stats = statistics.BandStatistics(
            1,
            [1, 1, 1],
            np.zeros((3, 8, 8)),
            np.tile(np.linspace(1, 1e4, 64).reshape(8, 8), (3, 1, 1)),
        )
        qtables = {"paper": design.design_tables(stats)}
        path = os.path.join(self.create_tempdir().full_path, "p.png")
        design.plot(path, stats, qtables, reference_quality=75)
        self.assertGreater(os.path.getsize(path), 1000)


class DesignReliabilityTest(tf.test.TestCase):
    def test_bad_images_are_skipped_and_recorded(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [0, 2, 4])
        for name, content in [
            ("n01440764_empty.JPEG", b""),
            ("n01440764_junk.JPEG", b"junk"),
        ]:
            with open(os.path.join(data, name), "wb") as f:
                f.write(content)
        workdir = self.create_tempdir().full_path
        result = design.run(design.Config(data=data, per_class=None), workdir)
        self.assertEqual(result.statistics.num_images, 3)
        with open(os.path.join(workdir, "errors.jsonl")) as f:
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
        self.assertIn("2 images skipped", result.summary)

    def test_resume_reuses_finished_shards_and_matches(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, list(range(7)))
        config = design.Config(data=data, per_class=None, shard_size=2)
        whole = self.create_tempdir().full_path
        expected = design.run(config, whole)

        resumed = self.create_tempdir().full_path
        design.run(config, resumed)
        shards = os.path.join(resumed, "shards")
        names = sorted(os.listdir(shards))
        self.assertLen(names, 4)
        # As if killed after two shards: the others are missing.
        for name in names[2:]:
            os.remove(os.path.join(shards, name))
        kept = os.path.join(shards, names[0])
        mtime = os.stat(kept).st_mtime_ns
        result = design.run(config, resumed, resume=True)
        self.assertEqual(os.stat(kept).st_mtime_ns, mtime)
        self.assertAllEqual(result.statistics.sums, expected.statistics.sums)
        for variant in expected.qtables:
            self.assertAllEqual(
                result.qtables[variant][0], expected.qtables[variant][0]
            )
        with self.assertRaisesRegex(ValueError, "cannot resume"):
            design.run(
                dataclasses.replace(config, seed=1), resumed, resume=True
            )
