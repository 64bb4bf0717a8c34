"""Pytest set-up shared by all tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

# tf.test.TestCase.create_tempdir() reads absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()
