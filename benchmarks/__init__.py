"""Throughput and memory benchmarks (`make bench`); not run in CI.

Like the experiment scripts, `python -m benchmarks.<name>` hides
TensorFlow's native log noise (`compression_helps.quiet`);
`TF_CPP_MIN_LOG_LEVEL` set in the environment shows it.
"""

from compression_helps.core import quiet

if quiet.is_script_run(__name__):
    quiet.quiet_native_logs()
