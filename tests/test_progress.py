import contextlib
import io
import os
import re

import tensorflow as tf
from absl.testing import parameterized

from compression_helps.core import progress
from compression_helps.engine import evaluate
from compression_helps.models import registry
from compression_helps.sources import datasets
from tests import testing_utils

# What a terminal understands and a log file shows as garbage.
ESCAPES = re.compile(r"[\x1b\x08]")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_batches(stream, total=250, batch=4, seconds_per_batch=1.0):
    """Counts `total` items in batches; returns the Progress."""
    clock = FakeClock()
    bar = progress.Progress(total, "image", "work", stream=stream, clock=clock)
    with bar:
        for start in range(0, total, batch):
            clock.now += seconds_per_batch
            bar.add(min(batch, total - start))
    return bar


class ProgressTest(tf.test.TestCase, parameterized.TestCase):
    def test_count_reaches_the_total_batch_by_batch(self):
        bar = run_batches(io.StringIO())
        self.assertEqual(bar.count, 250)
        self.assertIn("work: 250/250 images (100%)", bar.line())

    def test_plain_output_has_one_line_per_tenth_and_no_escapes(self):
        stream = io.StringIO()
        run_batches(stream)
        text = stream.getvalue()
        self.assertNotRegex(text, ESCAPES)
        self.assertNotIn("\r", text)
        lines = text.splitlines()
        # The first batch, each further 10%, and the end.
        self.assertLen(lines, 11)
        self.assertStartsWith(lines[0], "work: 4/250 images (2%)")
        self.assertStartsWith(lines[1], "work: 28/250 images (11%)")
        self.assertStartsWith(lines[-1], "work: 250/250 images (100%)")
        self.assertIn("left", lines[1])
        self.assertNotIn("left", lines[-1])

    def test_plain_output_of_a_slow_job_has_a_line_every_minute(self):
        stream = io.StringIO()
        clock = FakeClock()
        bar = progress.Progress(
            1000, "image", "work", stream=stream, clock=clock
        )
        for _ in range(10):  # 25 s per image: no 10% step in sight.
            clock.now += 25.0
            bar.add(1)
        lines = stream.getvalue().splitlines()
        self.assertEqual(
            [line.split(",")[1] for line in lines],
            [
                " 0:25 elapsed",
                " 1:40 elapsed",
                " 2:55 elapsed",
                " 4:10 elapsed",
            ],
        )

    def test_terminal_redraws_one_line_without_escape_codes(self):
        stream = Terminal()
        run_batches(stream)
        text = stream.getvalue()
        self.assertNotRegex(text, ESCAPES)
        self.assertTrue(text.startswith("\r"))
        self.assertTrue(text.endswith("\n"))
        self.assertEqual(text.count("\n"), 1)
        self.assertIn("work: [####################] 250/250", text)

    def test_unknown_total_counts_and_ends_with_a_line(self):
        stream = io.StringIO()
        with progress.Progress(None, "trial", "fit", stream=stream) as bar:
            bar.add(1)
            bar.add(2)
        lines = stream.getvalue().splitlines()
        self.assertStartsWith(lines[0], "fit: 1 trial, ")
        self.assertStartsWith(lines[-1], "fit: 3 trials, ")

    def test_not_verbose_counts_but_shows_nothing(self):
        stream = io.StringIO()
        bar = progress.Progress(5, verbose=False, stream=stream)
        with bar:
            bar.add(5)
        self.assertEqual(bar.count, 5)
        self.assertEqual(stream.getvalue(), "")

    def test_part_counts_exactly_its_size(self):
        bar = progress.Progress(10, verbose=False)
        with bar.part(4) as report:
            report(3)
            report(3)  # Only 1 of these is left.
        self.assertEqual(bar.count, 4)
        with bar.part(6) as report:
            report(2)  # The other 4 were skipped: counted at the end.
        self.assertEqual(bar.count, 10)

    def test_reused_items_do_not_shorten_the_time_left(self):
        clock = FakeClock()
        bar = progress.Progress(100, verbose=False, clock=clock)
        bar.add(50, reused=True)
        bar.add(10)  # The first computed batch starts the clock.
        clock.now += 10.0
        bar.add(10)  # 1 item/s: 30 items left, 30 s.
        self.assertIn("about 0:30 left", bar.line())

    @parameterized.named_parameters(
        ("terminal", Terminal(), True, 1),
        ("log_file", io.StringIO(), True, 2),
        ("quiet", Terminal(), False, 0),
    )
    def test_keras_verbose(self, stream, verbose, expected):
        self.assertEqual(progress.keras_verbose(verbose, stream), expected)


class EvaluateProgressTest(tf.test.TestCase):
    def test_progress_moves_per_batch_within_one_shard(self):
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [1, 2, 3, 4, 5, 6])
        model_dir = self.create_tempdir().full_path
        classifier = registry.load_classifier(
            testing_utils.tiny_model_file(model_dir), weights="none"
        )
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            evaluate.predict(
                classifier,
                datasets.load(folder),
                (50,),
                batch_size=2,
                shard_size=256,
            )
        lines = output.getvalue().splitlines()
        self.assertEqual(
            [line.split(",")[0] for line in lines],
            [
                "evaluating: 2/6 images (33%)",
                "evaluating: 4/6 images (67%)",
                "evaluating: 6/6 images (100%)",
            ],
        )
        self.assertNotRegex(output.getvalue(), ESCAPES)
        self.assertFalse(os.path.exists(os.path.join(folder, "shards")))
