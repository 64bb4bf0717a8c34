"""Every job resumes, refuses and writes its run folder the same way.

One parametrised suite over every job (`JOBS`): a resume after a change of a
result-changing setting, of the data or of an input file is refused with one
line; a run killed with SIGKILL resumes to byte-identical outputs; a user's
files survive; a second run in a locked folder is refused; a run whose
writes fail (full disk) leaves no half-written file that a later run trusts.
"""

import contextlib
import dataclasses
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import tensorflow as tf
from absl.testing import parameterized

from compression_helps.compress import compress
from compression_helps.core import files, imagenet, rundir
from compression_helps.models import registry
from compression_helps.multi_input import train
from compression_helps.selection import runner
from compression_helps.sources import datasets
from deepn_jpeg.jobs import (
    crossfit,
    design,
    fit,
    rate_accuracy,
    sensitivity,
    ship,
)
from deepn_jpeg.jpeg import tables
from tests import testing_utils

NUM_IMAGES = 8


@dataclasses.dataclass(frozen=True)
class Fixture:
    """Files a job reads: images, a tiny model, a tables file."""

    data: str
    model: str
    tables: str


@dataclasses.dataclass(frozen=True)
class Job:
    """How the suite runs one job.

    Attributes:
      name: the job (and `experiments.<name>` script).
      run: `(fixture, workdir, resume, **setting_changes)`: one in-process
        run through the library.
      flags: `fixture -> flags` of the same run for the script.
      change: a result-changing setting and its other value.
      outputs: result files compared byte for byte.
      input_file: `fixture -> path` of an input file whose content changes
        results; None: the job reads none.
      progress: the file (under the workdir) that shows resumable work
        done: a shard folder, or a log of finished trials.
      volatile: keys of JSON outputs that may differ (wall times).
      workdir_flag: the script's flag for the workdir.
      run_folder: where in the workdir the job keeps its run folder (its
        lock).
    """

    name: str
    run: Callable[..., object]
    flags: Callable[[Fixture], list[str]]
    change: dict
    outputs: tuple[str, ...]
    input_file: Callable[[Fixture], str] | None
    progress: str = rundir.SHARD_DIR
    volatile: tuple[str, ...] = ()
    workdir_flag: str = "workdir"
    run_folder: str = ""


def _run_selectors(fixture, workdir, resume=False, **changes):
    config = runner.Config(
        model=registry.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data),
        batch_size=2,
        qualities=(90, 10),
        shard_size=2,
    )
    return runner.run(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


def _compress(fixture, workdir, resume=False, **changes):
    config = compress.Config(
        model=registry.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data),
        qualities=(90, 10),
        verify=True,
        batch_size=2,
        shard_size=2,
    )
    return compress.run(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


def _design_qtable(fixture, workdir, resume=False, **changes):
    config = design.Config(
        data=datasets.DataConfig(fixture.data), per_class=None, shard_size=4
    )
    return design.run(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


def _eval_deepn_jpeg(fixture, workdir, resume=False, **changes):
    config = rate_accuracy.Config(
        tables=fixture.tables,
        model=registry.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data),
        batch_size=2,
        qualities=(50, 20),
        shard_size=2,
        bootstrap=20,
    )
    return rate_accuracy.run(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


def _fit_qtable(fixture, workdir, resume=False, **changes):
    config = fit.Config(
        model=registry.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data, split="fit"),
        families=("standard",),
        budget_qualities=(50,),
        max_trials=6,
        batch_size=2,
    )
    return fit.run(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


def _measure_sensitivity(fixture, workdir, resume=False, **changes):
    config = sensitivity.Config(
        model=registry.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data),
        batch_size=2,
        shard_size=2,
    )
    return sensitivity.run(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


def _crossfit_deepn_jpeg(fixture, workdir, resume=False, **changes):
    config = crossfit.Config(
        model=registry.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data),
        methods=("monotone", "fit-standard"),
        encoders=("libjpeg",),
        qualities=(50, 20),
        fit_images=4,
        fit_trials=2,
        batch_size=2,
        eval_batch_size=2,
        shard_size=2,
        bootstrap=20,
    )
    return crossfit.run(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


def _ship_qtables(fixture, workdir, resume=False, **changes):
    config = ship.Config(
        model=registry.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data),
        method="fit-standard",
        name="mine",
        fit_images=4,
        fit_trials=3,
        batch_size=2,
    )
    return ship.run(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


def _train_multi_input(fixture, workdir, resume=False, **changes):
    config = train.Config(
        model=registry.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data),
        qualities=(90, 10),
        num_eval=2,
        epochs=12,
        batch_size=2,
        learning_rate=0.01,
    )
    return train.train_and_evaluate(
        dataclasses.replace(config, **changes), workdir, resume, False
    )


JOBS = (
    Job(
        "run_selectors",
        _run_selectors,
        lambda f: [
            f"--model={f.model}",
            "--weights=none",
            f"--data={f.data}",
            "--batch_size=2",
            "--qualities=90,10",
            "--shard_size=2",
        ],
        {"qualities": (80, 10)},
        ("tiny/predictions.npz", "tiny/report.json", "summary.csv"),
        lambda f: f.model,
    ),
    Job(
        "compress",
        _compress,
        lambda f: [
            f"--model={f.model}",
            "--weights=none",
            f"--data={f.data}",
            "--qualities=90,10",
            "--verify",
            "--batch_size=2",
            "--shard_size=2",
        ],
        {"qualities": (80, 10)},
        (
            ".compress/manifest.csv",
            ".compress/summary.json",
            f"{imagenet.wnids()[0]}_0.jpg",
            f"{imagenet.wnids()[NUM_IMAGES - 1]}_{NUM_IMAGES - 1}.jpg",
        ),
        lambda f: f.model,
        progress=".compress/shards",
        volatile=("out",),
        workdir_flag="out",
        run_folder=".compress",
    ),
    Job(
        "design_qtable",
        _design_qtable,
        lambda f: [f"--data={f.data}", "--per_class=0", "--shard_size=4"],
        {"chroma_subsampling": "4:2:0"},
        ("statistics.json", "qtables_paper.json", "qtables_monotone.txt"),
        None,
    ),
    Job(
        "eval_deepn_jpeg",
        _eval_deepn_jpeg,
        lambda f: [
            f"--tables={f.tables}",
            f"--model={f.model}",
            "--weights=none",
            f"--data={f.data}",
            "--batch_size=2",
            "--qualities=50,20",
            "--shard_size=2",
            "--bootstrap=20",
        ],
        {"qualities": (60, 20)},
        ("predictions.npz", "rate_accuracy.json"),
        lambda f: f.tables,
    ),
    Job(
        "fit_qtable",
        _fit_qtable,
        lambda f: [
            f"--model={f.model}",
            "--weights=none",
            f"--data={f.data}",
            "--families=standard",
            "--budget_qualities=50",
            "--max_trials=6",
            "--batch_size=2",
        ],
        {"tie_weight": 0.5},
        ("qtables_fit-standard-qf50.json", "qtables_fit-standard-qf50.txt"),
        lambda f: f.model,
        progress="trials.jsonl",
    ),
    Job(
        "measure_sensitivity",
        _measure_sensitivity,
        lambda f: [
            f"--model={f.model}",
            "--weights=none",
            f"--data={f.data}",
            "--batch_size=2",
            "--shard_size=2",
        ],
        {"loss": "xent"},
        ("sensitivity.npz", "qtables_sensitivity.json"),
        lambda f: f.model,
    ),
    Job(
        "crossfit_deepn_jpeg",
        _crossfit_deepn_jpeg,
        lambda f: [
            f"--model={f.model}",
            "--weights=none",
            f"--data={f.data}",
            "--methods=monotone,fit-standard",
            "--encoders=libjpeg",
            "--qualities=50,20",
            "--fit_images=4",
            "--fit_trials=2",
            "--batch_size=2",
            "--eval_batch_size=2",
            "--shard_size=2",
            "--bootstrap=20",
        ],
        {"fit_quality": 40},
        ("predictions.npz", "crossfit.json"),
        lambda f: f.model,
        progress="fold1/eval/shards",
    ),
    Job(
        "ship_qtables",
        _ship_qtables,
        lambda f: [
            f"--model={f.model}",
            "--weights=none",
            f"--data={f.data}",
            "--method=fit-standard",
            "--name=mine",
            "--fit_images=4",
            "--fit_trials=3",
            "--batch_size=2",
        ],
        {"fit_quality": 40},
        ("mine.json",),
        lambda f: f.model,
        progress="design/fit/trials.jsonl",
    ),
    Job(
        "train_multi_input",
        _train_multi_input,
        lambda f: [
            f"--model={f.model}",
            "--weights=none",
            f"--data={f.data}",
            "--qualities=90,10",
            "--num_eval=2",
            "--epochs=12",
            "--batch_size=2",
            "--learning_rate=0.01",
        ],
        {"learning_rate": 0.02},
        ("results.json", "metrics.jsonl"),
        lambda f: f.model,
        progress="backup/checkpoint.json",
        volatile=("wall_time_s",),
    ),
)
_PARAMETERS = [(job.name, job) for job in JOBS]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class JobsTest(tf.test.TestCase, parameterized.TestCase):
    def make_fixture(self) -> Fixture:
        data = self.create_tempdir("data").full_path
        testing_utils.write_image_folder(data, list(range(NUM_IMAGES)))
        folder = self.create_tempdir("inputs").full_path
        model = testing_utils.tiny_model_file(folder)
        tables_file = os.path.join(folder, "qtables_mine.json")
        tables.save_json(tables_file, *tables.standard_qtables(30))
        return Fixture(data, model, tables_file)

    def assert_same_outputs(self, job, workdir, reference):
        for name in job.outputs:
            got = _read(os.path.join(workdir, name))
            want = _read(os.path.join(reference, name))
            if job.volatile and name.endswith(".json"):  # But wall times.
                got, want = (
                    _without(json.loads(x), job.volatile) for x in (got, want)
                )
            self.assertEqual(got, want, name)

    def assert_refused(self, job, fixture, workdir, pattern, **changes):
        with self.assertRaisesRegex(ValueError, pattern) as raised:
            job.run(fixture, workdir, True, **changes)
        self.assertLen(str(raised.exception).splitlines(), 1)

    @parameterized.named_parameters(*_PARAMETERS)
    def test_resume_after_a_setting_change_is_refused(self, job):
        fixture = self.make_fixture()
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        job.run(fixture, workdir)
        (name,) = job.change
        self.assert_refused(
            job, fixture, workdir, f"other settings.*{name}", **job.change
        )

    @parameterized.named_parameters(*_PARAMETERS)
    def test_resume_after_the_data_changed_is_refused(self, job):
        fixture = self.make_fixture()
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        job.run(fixture, workdir)
        path = os.path.join(fixture.data, sorted(os.listdir(fixture.data))[0])
        kept = os.path.join(self.create_tempdir().full_path, "kept.JPEG")
        shutil.copy2(path, kept)  # Content and modification time.
        copy = path.replace(".JPEG", "_copy.JPEG")

        def replace():
            image = testing_utils.random_image(seed=99)
            with open(path, "wb") as f:
                f.write(testing_utils.jpeg_bytes(image))

        changes = {
            "added": (lambda: shutil.copy(path, copy), lambda: os.remove(copy)),
            "removed": (lambda: os.remove(path), lambda: None),
            "replaced": (replace, lambda: None),
        }
        for what, (change, undo) in changes.items():
            with self.subTest(what):
                change()
                self.assert_refused(job, fixture, workdir, "data changed")
                undo()
                shutil.copy2(kept, path)
        job.run(fixture, workdir, True)  # As it was: resumable again.

    @parameterized.named_parameters(*_PARAMETERS)
    def test_resume_after_an_input_file_changed_is_refused(self, job):
        fixture = self.make_fixture()
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        if job.input_file is None:
            self.skipTest(f"{job.name} reads no input file")
        job.run(fixture, workdir)
        path = job.input_file(fixture)
        if path == fixture.tables:
            tables.save_json(path, *tables.standard_qtables(31))
        else:
            folder = self.create_tempdir().full_path
            shutil.copy(testing_utils.tiny_model_file(folder, seed=1), path)
        self.assert_refused(job, fixture, workdir, "input files changed")

    @parameterized.named_parameters(*_PARAMETERS)
    def test_users_files_survive(self, job):
        fixture = self.make_fixture()
        users = self.create_tempdir().full_path
        for name in ("shards/notes.txt", "logs/app.log", "config.json"):
            os.makedirs(
                os.path.dirname(os.path.join(users, name)), exist_ok=True
            )
            with open(os.path.join(users, name), "w") as f:
                f.write("mine")
        before = sorted(
            os.path.relpath(os.path.join(r, f), users)
            for r, _, files in os.walk(users)
            for f in files
        )
        with self.assertRaisesRegex(ValueError, "did not write"):
            job.run(fixture, users)
        after = sorted(
            os.path.relpath(os.path.join(r, f), users)
            for r, _, files in os.walk(users)
            for f in files
        )
        self.assertEqual(after, before)
        # A file a user puts into a run folder survives a fresh run there.
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        job.run(fixture, workdir)
        os.makedirs(os.path.join(workdir, "shards"), exist_ok=True)
        for name in ("notes.txt", "shards/mine.txt"):
            with open(os.path.join(workdir, name), "w") as f:
                f.write("mine")
        job.run(fixture, workdir)
        for name in ("notes.txt", "shards/mine.txt"):
            self.assertEqual(_read(os.path.join(workdir, name)), b"mine")

    @parameterized.named_parameters(*_PARAMETERS)
    def test_second_run_in_a_locked_workdir_is_refused(self, job):
        fixture = self.make_fixture()
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        job.run(fixture, workdir)
        lock_path = os.path.join(workdir, job.run_folder, ".lock")
        with open(lock_path, "a") as lock:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)  # As a running job holds it.
            for resume in (False, True):
                with self.assertRaisesRegex(ValueError, "another run"):
                    job.run(fixture, workdir, resume)

    @parameterized.named_parameters(*_PARAMETERS)
    def test_full_disk_leaves_no_file_a_later_run_trusts(self, job):
        fixture = self.make_fixture()
        full = os.path.join(self.create_tempdir().full_path, "full")
        job.run(fixture, full)
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        # Every write past 1 KiB fails, as on a nearly full disk.
        with _file_size_limit(1024):
            with self.assertRaises(OSError) as raised:
                job.run(fixture, workdir)
        self.assertIn(raised.exception.errno, (errno.EFBIG, errno.ENOSPC))
        # Every file left is whole: empty only where the full run's is,
        # readable whatever its kind.
        for root, _, names in os.walk(workdir):
            for name in names:
                path = os.path.join(root, name)
                twin = os.path.join(full, os.path.relpath(path, workdir))
                if os.path.getsize(path) == 0 and name != ".lock":
                    self.assertEqual(os.path.getsize(twin), 0, path)
                if name.endswith(".json"):
                    files.read_json(path)
                elif name.endswith(".npz"):
                    files.read_npz(path)
                elif name.endswith(".jsonl"):
                    # Logs append whole lines; a line the failure cut short
                    # (no newline) is dropped by the next run.
                    data = _read(path)
                    for line in data[: data.rfind(b"\n") + 1].splitlines():
                        json.loads(line)
        job.run(fixture, workdir, True)
        self.assert_same_outputs(job, workdir, full)

    @parameterized.named_parameters(*_PARAMETERS)
    def test_killed_run_resumes_to_identical_outputs(self, job):
        fixture = self.make_fixture()
        full = os.path.join(self.create_tempdir().full_path, "full")
        job.run(fixture, full)
        killed = os.path.join(self.create_tempdir().full_path, "killed")
        flags = [*job.flags(fixture), f"--{job.workdir_flag}={killed}"]
        process = _start_script(job.name, *flags)
        progress = os.path.join(killed, job.progress)
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if _has_work(progress):
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.assertTrue(_has_work(progress), "killed before any work")
        self.assertFalse(
            os.path.exists(os.path.join(killed, job.outputs[0])),
            "killed too late to test resuming",
        )
        job.run(fixture, killed, True)  # The same code as the script's.
        self.assert_same_outputs(job, killed, full)


def _without(value, keys):
    return {k: v for k, v in value.items() if k not in keys}


def _has_work(path):
    """A non-empty shard folder, or a log with a finished line."""
    if os.path.isdir(path):
        return bool(os.listdir(path))
    return os.path.exists(path) and b"\n" in _read(path)


def _start_script(name, *flags):
    return subprocess.Popen(
        [sys.executable, "-m", f"experiments.{name}", *flags],
        cwd=testing_utils.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=testing_utils.script_environment(),
    )


@contextlib.contextmanager
def _file_size_limit(limit_bytes):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
