"""Command-line scripts (absl flags); each calls one library function.

`python -m experiments.<script>` imports this package before the script,
so before TensorFlow: here TensorFlow's native log noise is hidden for the
scripts (`compression_helps.quiet`); `--verbose`, or `TF_CPP_MIN_LOG_LEVEL`
set in the environment, shows it all.
"""

from absl import flags

from compression_helps.core import quiet

_VERBOSE = flags.DEFINE_bool(
    "verbose",
    False,
    "Show TensorFlow's native log lines (oneDNN notices, libpng warnings, "
    "C++ INFO and WARNING lines), hidden by default.",
)

if quiet.is_script_run(__name__):
    quiet.quiet_native_logs()
