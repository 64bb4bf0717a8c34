"""Hostile or careless input to the scripts: one line, exit 2, nothing lost.

Each case comes from a tester acting as a new user or as an attacker; the
library-level tests sit with their modules, these run the scripts.
"""

import os

import tensorflow as tf

from tests import test_tables, testing_utils


def assert_one_line_error(test, result, *parts):
    """Exit 2, `error: ...` on one line naming every part, no traceback."""
    test.assertEqual(result.returncode, 2, result.stderr)
    lines = [
        line for line in result.stderr.strip().splitlines() if line.strip()
    ]
    test.assertLen(lines, 1, result.stderr)
    test.assertStartsWith(lines[0], "error: ")
    for part in parts:
        test.assertIn(part, lines[0])
    test.assertNotIn("Traceback", result.stderr)


class TablesFileTest(tf.test.TestCase):
    def test_eval_refuses_a_crafted_tables_file_in_one_line(self):
        folder = self.create_tempdir().full_path
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [0, 1])
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        fifo = os.path.join(folder, "qtables_fifo.json")
        os.mkfifo(fifo)
        cases = [
            (test_tables.hostile_tables_file(folder, "deep"), "not a valid"),
            (
                test_tables.hostile_tables_file(folder, "huge_integer"),
                "not a valid",
            ),
            (fifo, "not a regular file: a FIFO"),
        ]
        with testing_utils.fifo_unblocked_after(fifo, 60):
            for path, message in cases:
                workdir = os.path.join(self.create_tempdir().full_path, "w")
                result = testing_utils.run_module(
                    "experiments.eval_deepn_jpeg",
                    f"--tables={path}",
                    f"--model={model}",
                    "--weights=none",
                    f"--data={data}",
                    f"--workdir={workdir}",
                )
                assert_one_line_error(self, result, path, message)
                self.assertFalse(os.path.exists(workdir))


if __name__ == "__main__":
    tf.test.main()
