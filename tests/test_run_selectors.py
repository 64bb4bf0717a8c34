import csv
import dataclasses
import json
import os
import shutil
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from compression_helps.engine import ranking
from compression_helps.models import registry
from compression_helps.selection import runner
from compression_helps.sources import datasets, folders
from tests import testing_utils

QUALITIES = (100, 90, 80, 70, 60, 50, 40, 30, 20, 10)
ROWS = (
    ["original"]
    + [f"qf{q}" for q in QUALITIES]
    + ["hrs", "keep_top1", "keep_top5", "keep_both"]
    + ["confident_0.5", "confident_0.7", "confident_0.9"]
)


def smallest(candidates, sizes):
    """The smallest file among `candidates`; the lower index on ties."""
    return min(candidates, key=lambda j: (sizes[j], j))


def chosen_by_hand(p):
    """Each row's choice per image, from SPEC.md's rules, image by image."""
    n, v = p.ranks.shape
    chosen = {name: [j] * n for j, name in enumerate(ROWS[:v])}
    rows = {name: [] for name in ROWS[v:]}
    for i in range(n):
        top1 = [j for j in range(v) if p.topk[i, j, 0] == p.topk[i, 0, 0]]
        top5 = [j for j in range(v) if set(p.topk[i, j]) == set(p.topk[i, 0])]
        best = min(p.ranks[i])
        sizes = p.sizes[i]
        rows["hrs"].append(
            smallest([j for j in range(v) if p.ranks[i, j] == best], sizes)
        )
        rows["keep_top1"].append(smallest(top1, sizes))
        rows["keep_top5"].append(smallest(top5, sizes))
        both = [j for j in top1 if j in top5]
        rows["keep_both"].append(smallest(both, sizes))
        for t in (0.5, 0.7, 0.9):
            sure = [j for j in top1 if p.topk_probs[i, j, 0] >= t]
            choice = smallest(sure, sizes) if sure else 0
            rows[f"confident_{t}"].append(choice)
    return {**chosen, **rows}


class RunSelectorsScriptTest(tf.test.TestCase):
    def test_script_on_8_real_images_report_matches_hand_computation(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        data = self.create_tempdir().full_path
        for path in testing_utils.sample_paths(8):
            shutil.copy(path, data)
        model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path, image_size=32
        )
        workdir = self.create_tempdir().full_path
        result = testing_utils.run_module(
            "experiments.run_selectors",
            f"--model={model}",
            f"--data={data}",
            f"--workdir={workdir}",
            "--batch_size=3",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("| hrs |", result.stdout)

        # One model has its folder too, named after the model file.
        outputs = os.path.join(workdir, "tiny")
        p = ranking.Predictions.load(os.path.join(outputs, "predictions.npz"))
        self.assertEqual(p.ranks.shape, (8, 11))
        self.assertEqual(p.topk.shape, (8, 11, 5))
        self.assertAllEqual(p.qualities, (0, *QUALITIES))
        self.assertEqual(p.names.tolist(), ROWS[:11])
        self.assertAllInRange(p.ranks, 1, 1000)
        examples = folders.folder_examples(data)
        self.assertEqual(
            p.ids.tolist(), [os.path.basename(e) for e, _ in examples]
        )
        self.assertAllEqual(p.labels, [label for _, label in examples])
        for i, (path, _) in enumerate(examples):
            # Candidate 0 is the original file as stored.
            self.assertEqual(p.sizes[i, 0], os.path.getsize(path))
        # rank == 1 iff the top-1 class is the label.
        self.assertAllEqual(p.ranks == 1, p.topk[:, :, 0] == p.labels[:, None])

        with open(os.path.join(outputs, "report.json")) as f:
            saved = json.load(f)
        self.assertEqual(saved["n_images"], 8)
        self.assertEqual(saved["n_errors"], 0)
        self.assertEqual([r["name"] for r in saved["rows"]], ROWS)
        pixels = p.num_pixels.sum()
        for row in saved["rows"]:
            chosen = np.array(chosen_by_hand(p)[row["name"]])
            ranks = p.ranks[np.arange(8), chosen]
            sizes = p.sizes[np.arange(8), chosen]
            expected = {
                "top1": 100 * np.mean(ranks == 1),
                "top5": 100 * np.mean(ranks <= 5),
                "cr": p.sizes[:, 0].sum() / sizes.sum(),
                "mean_bytes": sizes.mean(),
                "bpp": 8 * sizes.sum() / pixels,
            }
            for key, want in expected.items():
                self.assertAlmostEqual(row[key], want, 9, (row["name"], key))
        with open(os.path.join(outputs, "report.csv"), newline="") as f:
            table = list(csv.DictReader(f))
        self.assertEqual([r["name"] for r in table], ROWS)
        self.assertGreater(
            os.path.getsize(os.path.join(outputs, "accuracy_vs_cr.png")), 0
        )
        with open(os.path.join(workdir, "summary.csv"), newline="") as f:
            summary = list(csv.DictReader(f))
        self.assertEqual([r["name"] for r in summary], ROWS)
        self.assertEqual({r["model"] for r in summary}, {"tiny"})

        # The report is rebuilt from predictions.npz without the model.
        os.remove(os.path.join(outputs, "report.json"))
        runner.rebuild_report(workdir, verbose=False)
        with open(os.path.join(outputs, "report.json")) as f:
            self.assertEqual(json.load(f), saved)


class UsageErrorTest(tf.test.TestCase):
    """What run_selectors.py prints as one `error:` line (status 2)."""

    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, [0, 2])
        self.model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path
        )

    def config(self, model=None, weights=None, **kwargs):
        # Registry models at 32 pixels: built in about a second.
        size = 32 if model else None
        return runner.Config(
            model=registry.ModelConfig(model or self.model, weights, size),
            data=datasets.DataConfig(kwargs.pop("data", self.data)),
            **kwargs,
        )

    def assert_one_line_error(self, message, fn, *args):
        with self.assertRaises((ValueError, OSError)) as e:
            fn(*args)
        self.assertIn(message, str(e.exception))
        self.assertNotIn("\n", str(e.exception))

    def workdir(self):
        return os.path.join(self.create_tempdir().full_path, "run")

    def test_bad_settings(self):
        wrong_weights = self.create_tempdir().full_path + "/w.weights.h5"
        keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(2)]
        ).save_weights(wrong_weights)
        cases = [
            ("unknown model", self.config("nope")),
            ("model file not found", self.config("/nowhere/m.keras")),
            ("[1, 100]", self.config(qualities=(50, 500))),
            ("repeated", self.config(qualities=(50, 50))),
            ("batch_size", self.config(batch_size=0)),
            ("/nowhere", self.config(data="/nowhere")),
            (
                "no image files",
                self.config(data=self.create_tempdir().full_path),
            ),
            (
                "not found",
                self.config("efficientnet_lite0", "/nowhere/w.h5"),
            ),
            (
                "cannot load",
                self.config("efficientnet_lite0", wrong_weights),
            ),
            ("empty name in the list", self.config(f"{self.model},")),
            (
                "list each model once",
                self.config(f"{self.model},{self.model}"),
            ),
            (
                "cannot be the weights of several models",
                self.config("resnet50v2,efficientnet_lite0", wrong_weights),
            ),
        ]
        for message, config in cases:
            with self.subTest(message):
                self.assert_one_line_error(
                    message, runner.run, config, self.workdir(), False, False
                )

    def test_settings_are_checked_before_the_data_and_the_model(self):
        cases = [
            ("batch_size must be >= 1, got 0", dict(batch_size=0)),
            ("batch_size must be >= 1, got -2", dict(batch_size=-2)),
            ("shard_size must be >= 1, got 0", dict(shard_size=0)),
            ("shard_size must be >= 1, got -1", dict(shard_size=-1)),
            ("limit must be >= 1", dict(limit=-1)),
            ("limit must be >= 1", dict(limit=0)),
            ("split must be one of", dict(split="half")),
            ("mixed_precision", dict(mixed_precision="float13")),
            ("data_service must be grpc://", dict(data_service="http://h:1")),
        ]
        for message, changes in cases:
            data_changes = {
                k: changes.pop(k) for k in ("limit", "split") if k in changes
            }
            config = self.config(**changes)
            config = dataclasses.replace(
                config, data=dataclasses.replace(config.data, **data_changes)
            )
            workdir = self.workdir()
            with self.subTest(message):
                with (
                    mock.patch.object(registry.ModelConfig, "load") as load,
                    mock.patch.object(datasets.DataConfig, "load") as read,
                ):
                    self.assert_one_line_error(
                        message, runner.run, config, workdir, False, False
                    )
                load.assert_not_called()
                read.assert_not_called()
                self.assertFalse(os.path.exists(workdir))

    def test_script_bad_flag_is_one_error_line_and_status_2(self):
        workdir = self.workdir()
        result = testing_utils.run_module(
            "experiments.run_selectors",
            f"--model={self.model}",
            f"--data={self.data}",
            f"--workdir={workdir}",
            "--limit=-1",
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr.strip().splitlines()[-1],
            "error: limit must be >= 1 (leave it out for all images), got -1",
        )
        self.assertFalse(os.path.exists(workdir))

    def test_report_only_needs_no_model_file(self):
        workdir = self.workdir()
        runner.run(self.config(qualities=(50,)), workdir, verbose=False)
        os.remove(os.path.join(workdir, "tiny", "report.json"))
        os.remove(self.model)
        result = runner.rebuild_report(workdir, verbose=False)
        self.assertEqual(result["tiny"]["n_images"], 2)

    def test_bad_workdirs(self):
        a_file = self.create_tempfile().full_path
        self.assert_one_line_error(
            "cannot create the --workdir folder",
            runner.run,
            self.config(),
            a_file + "/sub",
            False,
            False,
        )
        self.assert_one_line_error(
            "no run_selectors run here",
            runner.rebuild_report,
            self.workdir(),
            False,
        )
        # A folder of the user's is refused and left as it was.
        mine = self.create_tempdir().full_path
        with open(os.path.join(mine, "thesis.tex"), "w") as f:
            f.write("mine")
        self.assert_one_line_error(
            "did not write", runner.run, self.config(), mine, False, False
        )
        self.assertEqual(os.listdir(mine), ["thesis.tex"])


class SeveralModelsTest(tf.test.TestCase):
    """`--model=a,b`: one JPEG stage, each model its own size and outputs."""

    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        testing_utils.write_image_folder(self.data, [0, 1, 2])
        folder = self.create_tempdir().full_path
        self.models = []
        # Two input sizes: each model crops and resizes on its own.
        for name, size, seed in (("small", 16, 0), ("large", 24, 1)):
            made = testing_utils.tiny_model_file(
                self.create_tempdir().full_path, image_size=size, seed=seed
            )
            path = os.path.join(folder, f"{name}.keras")
            os.rename(made, path)
            self.models.append(path)

    def config(self, model_files):
        return runner.Config(
            model=registry.ModelConfig(",".join(model_files), None),
            data=datasets.DataConfig(self.data),
            batch_size=2,
            qualities=(90, 10),
            shard_size=2,
        )

    def workdir(self):
        return os.path.join(self.create_tempdir().full_path, "run")

    def test_one_pass_gives_exactly_the_predictions_of_separate_runs(self):
        together = self.workdir()
        reports = runner.run(self.config(self.models), together, verbose=False)
        self.assertEqual(list(reports), ["small", "large"])
        for name, model in zip(reports, self.models, strict=True):
            alone = self.workdir()
            alone_reports = runner.run(
                self.config([model]), alone, verbose=False
            )
            self.assertEqual(alone_reports[name], reports[name])
            want, got = (
                ranking.Predictions.load(
                    os.path.join(workdir, name, "predictions.npz")
                )
                for workdir in (alone, together)
            )
            for field, array in want.to_arrays().items():
                self.assertAllEqual(getattr(got, field), array, msg=field)

        with open(os.path.join(together, "summary.csv"), newline="") as f:
            summary = list(csv.DictReader(f))
        rows = ["original", "qf90", "qf10", *ROWS[11:]]
        self.assertEqual([r["name"] for r in summary], rows + rows)
        self.assertEqual(
            [r["model"] for r in summary],
            ["small"] * len(rows) + ["large"] * len(rows),
        )
        with open(os.path.join(together, "summary.md")) as f:
            header = f.readline()
        self.assertIn("| small top-1 % |", header)
        self.assertIn("| large CR |", header)

        rebuilt = runner.rebuild_report(together, verbose=False)
        self.assertEqual(rebuilt, reports)

    def test_resume_with_another_model_list_is_refused(self):
        workdir = self.workdir()
        runner.run(self.config(self.models), workdir, verbose=False)
        for changed in (self.models[:1], self.models[::-1]):
            with self.assertRaisesRegex(
                ValueError, r"other settings \(model.name\)"
            ):
                runner.run(
                    self.config(changed), workdir, resume=True, verbose=False
                )
