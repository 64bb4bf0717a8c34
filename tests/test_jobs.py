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

from compression_helps import datasets, models, rundir, runner
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
        results.
    """

    name: str
    run: Callable[..., object]
    flags: Callable[[Fixture], list[str]]
    change: dict
    outputs: tuple[str, ...]
    input_file: Callable[[Fixture], str]


def _run_selectors(fixture, workdir, resume=False, **changes):
    config = runner.Config(
        model=models.ModelConfig(fixture.model, None),
        data=datasets.DataConfig(fixture.data),
        batch_size=2,
        qualities=(90, 10),
        shard_size=2,
    )
    return runner.run(
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
        ("predictions.npz", "report.json", "report.csv"),
        lambda f: f.model,
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
        tables = os.path.join(folder, "qtables_mine.json")
        return Fixture(data, model, tables)

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
        def add(path):
            shutil.copy(path, path.replace(".JPEG", "_copy.JPEG"))

        def replace(path):
            with open(path, "wb") as f:
                f.write(
                    testing_utils.jpeg_bytes(
                        testing_utils.random_image(seed=99)
                    )
                )

        for what, change in (
            ("added", add),
            ("removed", os.remove),
            ("replaced", replace),
        ):
            with self.subTest(what):
                fixture = self.make_fixture()
                workdir = os.path.join(self.create_tempdir().full_path, "r")
                job.run(fixture, workdir)
                change(os.path.join(fixture.data, os.listdir(fixture.data)[0]))
                self.assert_refused(job, fixture, workdir, "data changed")

    @parameterized.named_parameters(*_PARAMETERS)
    def test_resume_after_an_input_file_changed_is_refused(self, job):
        fixture = self.make_fixture()
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        job.run(fixture, workdir)
        path = job.input_file(fixture)
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
        with open(os.path.join(workdir, ".lock"), "a") as lock:
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
        for root, _, files in os.walk(workdir):
            for name in files:
                path = os.path.join(root, name)
                self.assertFalse(
                    name != ".lock" and os.path.getsize(path) == 0, path
                )
        job.run(fixture, workdir, True)
        for name in job.outputs:
            self.assertEqual(
                _read(os.path.join(workdir, name)),
                _read(os.path.join(full, name)),
                name,
            )

    @parameterized.named_parameters(*_PARAMETERS)
    def test_killed_run_resumes_to_identical_outputs(self, job):
        fixture = self.make_fixture()
        full = os.path.join(self.create_tempdir().full_path, "full")
        job.run(fixture, full)
        killed = os.path.join(self.create_tempdir().full_path, "killed")
        flags = [*job.flags(fixture), f"--workdir={killed}"]
        process = _start_script(job.name, *flags)
        shards = os.path.join(killed, rundir.SHARD_DIR)
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if os.path.isdir(shards) and os.listdir(shards):
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.assertNotEmpty(os.listdir(shards), "killed before any shard")
        self.assertFalse(
            os.path.exists(os.path.join(killed, job.outputs[0])),
            "killed too late to test resuming",
        )
        process = _start_script(job.name, *flags, "--resume")
        _, err = process.communicate(timeout=300)
        self.assertEqual(process.returncode, 0, err)
        for name in job.outputs:
            self.assertEqual(
                _read(os.path.join(killed, name)),
                _read(os.path.join(full, name)),
                name,
            )


def _start_script(name, *flags):
    return subprocess.Popen(
        [sys.executable, "-m", f"experiments.{name}", *flags],
        cwd=testing_utils.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
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
