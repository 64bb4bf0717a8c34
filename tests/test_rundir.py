import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from compression_helps.core import files, progress, rundir

JOB = "test_job"


@dataclasses.dataclass(frozen=True)
class Nested:
    name: str = "m"


@dataclasses.dataclass(frozen=True)
class Settings:
    model: Nested = Nested()
    qualities: tuple[int, ...] = (50, 10)
    workers: int = 1


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tree(root):
    """Relative path -> bytes of every file under root."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            files[os.path.relpath(path, root)] = read(path)
    return files


class JsonlCacheTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.create_tempdir().full_path, "log.jsonl")
        cache = rundir.JsonlCache(self.path)
        cache.get_or_compute("a", lambda: {"value": 1})
        cache.get_or_compute("b", lambda: {"value": 2})
        # Cut the last line, as a kill in the middle of its write would.
        os.truncate(self.path, os.path.getsize(self.path) - 5)

    def test_cut_last_line_is_ignored_and_recomputed(self):
        cache = rundir.JsonlCache(self.path)
        self.assertEqual(list(cache.records), ["a"])
        self.assertEqual(
            cache.get_or_compute("a", lambda: self.fail("recomputed a")),
            {"value": 1, "key": "a"},
        )
        record = cache.get_or_compute("b", lambda: {"value": 2})
        self.assertEqual(record, {"value": 2, "key": "b"})
        self.assertEqual((cache.computed, cache.replayed), (1, 1))

    def test_record_recomputed_after_a_cut_line_is_kept(self):
        rundir.JsonlCache(self.path).get_or_compute("b", lambda: {"value": 2})
        cache = rundir.JsonlCache(self.path)
        self.assertEqual(sorted(cache.records), ["a", "b"])


class RunDirTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.create_tempdir().full_path, "run")

    def open(self, settings=Settings(), resume=False, **kwargs):
        return rundir.RunDir.open(self.root, JOB, settings, resume, **kwargs)

    def test_config_records_job_settings_data_and_inputs(self):
        tables = os.path.join(self.create_tempdir().full_path, "t.json")
        with open(tables, "w") as f:
            f.write("{}")
        with self.open(data={"files": 3}, inputs=[tables]):
            pass
        config = files.read_json(os.path.join(self.root, "config.json"))
        self.assertEqual(
            config,
            {
                "job": JOB,
                "settings": {
                    "model": {"name": "m"},
                    "qualities": [50, 10],
                    "workers": 1,
                },
                "data": {"files": 3},
                "inputs": {
                    tables: (
                        "44136fa355b3678a1146ad16f7e8649e"
                        "94fb4fc21fe77e8310c060f61caaff8a"
                    )
                },
            },
        )

    def test_folder_with_user_files_is_refused_and_untouched(self):
        os.makedirs(os.path.join(self.root, "photos"))
        with open(os.path.join(self.root, "photos", "a.jpg"), "wb") as f:
            f.write(b"mine")
        before = tree(self.root)
        for resume in (False, True):
            with self.assertRaisesRegex(ValueError, "did not write") as e:
                with self.open(resume=resume):
                    self.fail("opened")
            self.assertNotIn("\n", str(e.exception))
            self.assertEqual(tree(self.root), before)
            self.assertEqual(sorted(os.listdir(self.root)), ["photos"])

    def test_another_jobs_folder_is_refused(self):
        with self.open():
            pass
        with self.assertRaisesRegex(
            ValueError, "--workdir folder of a test_job run"
        ):
            with rundir.RunDir.open(self.root, "other", Settings()):
                self.fail("opened")

    def test_second_open_while_one_is_open_is_refused(self):
        with self.open(resume=True) as run:
            run.write_json("a.json", 1)
            for resume in (False, True):
                with self.assertRaisesRegex(ValueError, "another run") as e:
                    with self.open(resume=resume):
                        self.fail("opened twice")
                self.assertNotIn("\n", str(e.exception))
            # The refused run removed nothing.
            self.assertTrue(os.path.exists(run.path("a.json")))
        with self.open(resume=True):  # Free again once the first ends.
            pass

    def test_resume_with_other_settings_names_them(self):
        with self.open():
            pass
        other = Settings(model=Nested("n"), qualities=(50,))
        with self.assertRaisesRegex(
            ValueError, r"other settings \(model.name, qualities\)"
        ) as e:
            with self.open(other, resume=True):
                self.fail("resumed")
        self.assertNotIn("\n", str(e.exception))
        # Settings that do not change results may change.
        with self.open(Settings(workers=4), True, may_change=["workers"]):
            pass
        # A fresh run (no --resume) may use any settings.
        with self.open(other):
            pass

    def test_resume_with_other_data_is_refused(self):
        with self.open(data={"files": 3, "sha256": "x"}):
            pass
        with self.assertRaisesRegex(ValueError, "the data changed"):
            with self.open(resume=True, data={"files": 4, "sha256": "y"}):
                self.fail("resumed")
        with self.open(resume=True, data={"files": 3, "sha256": "x"}):
            pass

    def test_resume_with_a_changed_input_file_is_refused(self):
        tables = os.path.join(self.create_tempdir().full_path, "t.json")
        with open(tables, "w") as f:
            f.write("[1]")
        with self.open(inputs=[tables]):
            pass
        with self.open(resume=True, inputs=[tables]):
            pass
        with open(tables, "w") as f:
            f.write("[2]")
        with self.assertRaisesRegex(ValueError, "input files changed") as e:
            with self.open(resume=True, inputs=[tables]):
                self.fail("resumed")
        self.assertIn(tables, str(e.exception))

    def test_resume_keeps_the_outputs_fresh_run_removes_only_its_own(self):
        with self.open() as run:
            run.write_json("report.json", {"a": 1})
            run.write_npz("shards/p-0-2.npz", {"x": np.arange(2)})
            run.write_text("logs/train.txt", "epoch 1")
        # The user adds files of their own to the run folder.
        with open(os.path.join(self.root, "notes.txt"), "w") as f:
            f.write("mine")
        os.makedirs(os.path.join(self.root, "logs", "mine"))
        with open(os.path.join(self.root, "logs", "mine", "x"), "w") as f:
            f.write("mine too")

        with self.open(resume=True) as run:
            self.assertTrue(os.path.exists(run.path("report.json")))
            self.assertTrue(os.path.exists(run.path("shards/p-0-2.npz")))

        with self.open() as run:
            left = sorted(tree(self.root))
        self.assertEqual(
            left,
            [".lock", ".run.json", "config.json", "logs/mine/x", "notes.txt"],
        )
        self.assertFalse(os.path.exists(os.path.join(self.root, "shards")))

    def test_unwritable_parent_is_a_permission_error(self):
        a_file = self.create_tempfile().full_path
        with self.assertRaisesRegex(PermissionError, "cannot create"):
            with rundir.RunDir.open(a_file + "/sub", JOB, Settings()):
                self.fail("opened")

    def test_errors_are_written_and_counted_by_kind(self):
        skipped = [
            rundir.SkippedImage("a", "/d/a", "empty file: 0 bytes"),
            rundir.SkippedImage("b", "/d/b", "cannot decode: bad"),
            rundir.SkippedImage("c", "/d/c", "cannot decode: worse"),
        ]
        with self.open() as run:
            run.write_errors(skipped)
        self.assertEqual(
            rundir.count_errors(self.root),
            {"empty file": 1, "cannot decode": 2},
        )
        with open(os.path.join(self.root, "errors.jsonl")) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(
            lines[0],
            {"id": "a", "path": "/d/a", "reason": "empty file: 0 bytes"},
        )
        self.assertEqual(
            rundir.SkippedImage.from_array(
                rundir.SkippedImage.to_array(skipped)
            ),
            skipped,
        )


class MapShardsTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.root = self.create_tempdir().full_path + "/run"
        self.calls = []

    def compute(self, start, stop, report):
        self.calls.append((start, stop))
        for _ in range(start, stop):
            report(1)  # One "batch" per item.
        return {"x": np.arange(start, stop) * 10}

    def run_shards(self, resume, compute=None, bar=None):
        with rundir.RunDir.open(self.root, JOB, Settings(), resume) as run:
            shards = run.map_shards("w", 7, 3, compute or self.compute, bar)
            return np.concatenate([s["x"] for s in shards])

    def counted(self, resume, compute=None):
        """Runs the shards; returns the count after each `add`."""
        bar = progress.Progress(7, verbose=False)
        counts = []
        add = bar.add
        bar.add = lambda n, reused=False: (add(n, reused), counts.append(n))
        self.run_shards(resume, compute, bar)
        return counts, bar.count

    def test_shards_without_a_config_are_not_trusted(self):
        # A fresh run killed while it removed the last run's files: no
        # config.json is left to check the shards against.
        self.run_shards(False)
        os.remove(os.path.join(self.root, rundir.CONFIG_FILE))
        self.calls = []
        self.run_shards(True)
        self.assertEqual(self.calls, [(0, 3), (3, 6), (6, 7)])

    def test_marker_records_the_shards_once(self):
        self.run_shards(False)
        with open(os.path.join(self.root, ".run.json")) as f:
            owned = json.load(f)["owned"]
        self.assertEqual(
            [n for n in owned if n.startswith("shards/")], ["shards/w-*.npz"]
        )

    def test_progress_moves_per_batch_within_a_shard(self):
        counts, total = self.counted(False)
        self.assertEqual(counts, [1] * 7)
        self.assertEqual(total, 7)

    def test_progress_counts_a_reused_shard_at_once(self):
        self.run_shards(False)
        shards = os.path.join(self.root, "shards")
        os.remove(os.path.join(shards, sorted(os.listdir(shards))[1]))
        counts, total = self.counted(True)
        self.assertEqual(counts, [3, 1, 1, 1, 1])
        self.assertEqual(total, 7)

    def test_progress_counts_unreported_and_caps_overreported_items(self):
        def reports_wrongly(start, stop, report):
            report(100 if start == 0 else 0)  # Too many, then none.
            return {"x": np.arange(start, stop) * 10}

        counts, total = self.counted(False, reports_wrongly)
        self.assertEqual(counts, [3, 3, 1])
        self.assertEqual(total, 7)

    def test_resumed_run_computes_only_unfinished_shards(self):
        first = self.run_shards(False)
        self.assertAllEqual(first, np.arange(7) * 10)
        self.assertEqual(self.calls, [(0, 3), (3, 6), (6, 7)])
        shards = os.path.join(self.root, "shards")
        self.assertLen(os.listdir(shards), 3)
        os.remove(os.path.join(shards, sorted(os.listdir(shards))[1]))
        self.calls.clear()
        self.assertAllEqual(self.run_shards(True), first)
        self.assertEqual(self.calls, [(3, 6)])

    def test_damaged_shard_is_computed_again(self):
        first = self.run_shards(False)
        shards = os.path.join(self.root, "shards")
        damaged = os.path.join(shards, sorted(os.listdir(shards))[0])
        os.truncate(damaged, 10)
        self.calls.clear()
        self.assertAllEqual(self.run_shards(True), first)
        self.assertEqual(self.calls, [(0, 3)])
        self.assertAllEqual(files.read_npz(damaged)["x"], [0, 10, 20])

    def test_fresh_run_computes_everything_again(self):
        self.run_shards(False)
        self.calls.clear()
        self.run_shards(False)
        self.assertEqual(self.calls, [(0, 3), (3, 6), (6, 7)])

    def test_killed_run_keeps_the_finished_shards(self):
        def dies_on_second(start, stop, report):
            if start == 3:
                raise KeyboardInterrupt
            return self.compute(start, stop, report)

        with self.assertRaises(KeyboardInterrupt):
            self.run_shards(False, dies_on_second)
        self.calls.clear()
        self.assertAllEqual(self.run_shards(True), np.arange(7) * 10)
        self.assertEqual(self.calls, [(3, 6), (6, 7)])

    def test_shard_size_must_be_positive(self):
        with rundir.RunDir.open(self.root, JOB, Settings()) as run:
            with self.assertRaisesRegex(ValueError, "shard_size"):
                list(run.map_shards("w", 3, 0, self.compute))


class HostileMarkerTest(tf.test.TestCase):
    """A `.run.json` edited to name files outside its folder."""

    def test_fresh_run_never_removes_anything_outside(self):
        outside = self.create_tempdir().full_path
        victims = []
        for name in ("victim.txt", "victimdir/keep.txt", "linked/keep.txt"):
            path = os.path.join(outside, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("precious")
            victims.append(path)
        root = os.path.join(outside, "deep", "run")
        with rundir.RunDir.open(root, JOB, Settings()) as run:
            run.write_json("report.json", 1)
        os.symlink(
            os.path.join(outside, "linked"), os.path.join(root, "inside")
        )
        marker = os.path.join(root, ".run.json")
        files.write_json(
            marker,
            {
                "job": JOB,
                "owned": [
                    "../victim.txt",
                    "../../victim.txt",
                    os.path.join(outside, "victimdir"),
                    "../../victimdir",
                    "inside/keep.txt",
                    "inside",  # The link itself is the run's to remove.
                    "report.json",
                    7,
                ],
            },
        )
        with self.assertLogs(level="WARNING") as logs:
            with rundir.RunDir.open(root, JOB, Settings()):
                pass
        for path in victims:
            self.assertEqual(read(path), b"precious", path)
        self.assertFalse(os.path.lexists(os.path.join(root, "inside")))
        self.assertFalse(os.path.exists(os.path.join(root, "report.json")))
        self.assertIn("../../victimdir", "\n".join(logs.output))
        self.assertEqual(files.read_json(marker)["owned"], ["config.json"])

    def test_marker_that_is_not_a_list_owns_nothing(self):
        root = os.path.join(self.create_tempdir().full_path, "run")
        with rundir.RunDir.open(root, JOB, Settings()):
            pass
        files.write_json(
            os.path.join(root, ".run.json"), {"job": JOB, "owned": "abc"}
        )
        with rundir.RunDir.open(root, JOB, Settings()):
            pass
        self.assertTrue(os.path.exists(os.path.join(root, "config.json")))


class FlagInMessagesTest(tf.test.TestCase):
    def test_every_refusal_names_the_flag_given(self):
        root = os.path.join(self.create_tempdir().full_path, "out")
        open_ = rundir.RunDir.open
        with open_(root, JOB, Settings(), flag="--out"):
            with self.assertRaisesRegex(ValueError, "use a new --out$"):
                with open_(root, JOB, Settings(), flag="--out"):
                    pass
            with self.assertRaisesRegex(ValueError, "use a new --out$"):
                with rundir.RunDir.reopen(root, JOB, flag="--out"):
                    pass
        with self.assertRaisesRegex(ValueError, "new --out or drop --resume"):
            with open_(root, JOB, Settings(workers=2), True, flag="--out"):
                pass
        with self.assertRaisesRegex(ValueError, "--out folder of a test_job"):
            with open_(root, "other", Settings(), flag="--out"):
                pass
        with self.assertRaisesRegex(ValueError, "--out folder of a test_job"):
            with rundir.RunDir.reopen(root, "other", flag="--out"):
                pass
        mine = os.path.join(self.create_tempdir().full_path, "mine")
        os.makedirs(mine)
        with open(os.path.join(mine, "x"), "w") as f:
            f.write("x")
        with self.assertRaisesRegex(ValueError, "new or empty --out$"):
            with open_(mine, JOB, Settings(), flag="--out"):
                pass
