"""Quiet TensorFlow's native log lines in the scripts, unless asked for.

TensorFlow 2.21 writes lines to stderr from C++ that tell a user nothing
they can act on, and `TF_CPP_MIN_LOG_LEVEL` does not hide all of them:

- `I0000 ... port.cc:153] oneDNN custom operations are on ...`, twice
  (once per library that holds TF's logging), each after absl's `WARNING:
  All log messages before absl::InitializeLog() ...`: written before the
  level is read, so no level hides them;
- `E0000 ... oneDNN supports DT_UINT8 only on platforms with AVX-512 ...`,
  an error-level line about a fallback to Eigen on CPUs without AVX-512;
- `E0000 ... jpeg_mem.cc:331] Premature end of JPEG data`, libjpeg's words
  on a damaged file, which the run records in `errors.jsonl` anyway;
- `W0000 ... png_io.cc:96] PNG warning: iCCP: known incorrect sRGB
  profile`, one per PNG file that carries a common, harmless colour
  profile (libpng's warnings, logged by TF's PNG decoder), hundreds in a
  run over PNG files;
- `Suspension not allowed here`, libjpeg's words when an optimized file
  outgrows the buffer Pillow gave it; the file is written again with a
  larger one.

`quiet_native_logs` sets `TF_CPP_MIN_LOG_LEVEL=2` (C++ errors only) before
TensorFlow is imported and passes the process' stderr (file descriptor 2,
where C code writes too) through a small filter process that drops the
lines `is_noise` names and copies everything else, Python's tracebacks and
`absl.logging` included. The filter is a separate process so that it still
copies the last lines of a process that crashes or is killed. `--verbose`
or an explicit `TF_CPP_MIN_LOG_LEVEL` in the environment leaves all of it
as TensorFlow writes it.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import select
import signal
import sys
import time
from collections.abc import Sequence

__all__ = [
    "LOG_LEVEL",
    "LOG_LEVEL_VARIABLE",
    "is_noise",
    "is_script_run",
    "quiet_native_logs",
    "wants_verbose",
]

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
LOG_LEVEL = "2"  # TF's C++ errors still show; its INFO and WARNING lines not.
_NOISE = re.compile(
    "|".join(
        [
            # absl's notice before its logging starts (once per library).
            r"WARNING: All log messages before absl::InitializeLog\(\)",
            # absl/TF C++ INFO and WARNING lines: `I0000 00:00:17.5  12
            # port.cc:153] ...` (before absl starts, the seconds are those
            # since 1970; Python's absl lines look alike but name a .py
            # file, and stay), and TF's older `2025-01-30 22:44:42.45: I `.
            r"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+\.(cc|c|cpp|h):\d+\] ",
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] ",
            # oneDNN falls back to Eigen for a data type: nothing to do.
            r"E\d{4} .*\] oneDNN supports DT_\w+ only on platforms with",
            # libjpeg's complaints about a damaged file, relayed by TF's
            # decoder: the run records the file and why it was skipped.
            r"E\d{4} [\d:. ]+ \d+ jpeg_mem\.cc:\d+\] ",
            # The second line of cpu_feature_guard.cc's INFO message.
            r"To enable the following instructions: ",
            # libpng's own warning handler, and TF's decoder relaying them.
            r"(lib)?png warning: ",
            r"PNG warning: ",
            # libjpeg, when an optimized file outgrows Pillow's buffer: the
            # codec writes it again with a larger one (`codec`).
            r"Suspension not allowed here\n?$",
        ]
    ).encode()
)
# A line still without its end after this long is shown as it is (a
# prompt, a `\r` progress line), so it is never held back.
_PARTIAL_LINE_S = 0.1
_DRAIN_S = 2.0  # At exit, how long to wait for the filter's last lines.
_TRUE = ("", "true", "t", "1", "yes")
_started = False


def is_noise(line: str | bytes) -> bool:
    """Whether one stderr line is native log noise (see the module doc)."""
    if isinstance(line, str):
        line = line.encode(errors="replace")
    return _NOISE.match(line.strip(b"\r")) is not None


def wants_verbose(argv: Sequence[str]) -> bool:
    """Whether a command line has `--verbose` (the last one wins).

    Read from `sys.argv` before absl parses the flags: TensorFlow is
    imported (and logs) before that.
    """
    verbose = False
    for arg in argv[1:]:
        if arg == "--":
            break
        if not arg.startswith("-"):
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name == "verbose":
            verbose = not has_value or value.lower() in _TRUE
        elif name == "noverbose":
            verbose = False
    return verbose


def is_script_run(package: str) -> bool:
    """Whether this process is `python -m <package>.<script>`.

    Only a script may take over the process' stderr: a test or a notebook
    that imports the package keeps its own.
    """
    argv = list(getattr(sys, "orig_argv", ()))
    for i, arg in enumerate(argv):
        if arg == "-m" and i + 1 < len(argv):
            module = argv[i + 1]
        elif arg.startswith("-m") and len(arg) > 2:
            module = arg[2:]
        else:
            continue
        return module.startswith(f"{package}.")
    return False


def quiet_native_logs(argv: Sequence[str] | None = None) -> bool:
    """Hides TensorFlow's native log noise for the rest of the process.

    Call it before TensorFlow is imported; a second call does nothing.

    Args:
      argv: the command line; `--verbose` keeps everything. None:
        `sys.argv`.

    Returns:
      Whether the noise is hidden: not with `--verbose`, nor when the
      environment sets `TF_CPP_MIN_LOG_LEVEL` itself, nor when stderr
      cannot be redirected.
    """
    global _started
    argv = sys.argv if argv is None else argv
    if _started or wants_verbose(argv) or LOG_LEVEL_VARIABLE in os.environ:
        return False
    os.environ[LOG_LEVEL_VARIABLE] = LOG_LEVEL
    try:
        original = os.dup(2)
        read_fd, write_fd = os.pipe()
    except OSError:  # No stderr to filter (a daemon): the level must do.
        return True
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # The filter; it ends when every writer has closed fd 2.
        try:
            os.close(write_fd)
            _detach_from_terminal_input()
            _copy_without_noise(read_fd, original)
        finally:
            os._exit(0)
    os.close(read_fd)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    atexit.register(_wait_for_filter, original, pid)
    _started = True
    return True


def _detach_from_terminal_input() -> None:
    # Ctrl-C goes to the whole process group: the filter must live on to
    # copy the traceback of the script it interrupts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # Not holding the script's stdout pipe open.
        os.dup2(devnull, fd)
    os.close(devnull)


def _copy_without_noise(read_fd: int, out_fd: int) -> None:
    """Copies `read_fd` to `out_fd` line by line, without noise lines."""
    pending = b""
    continued = False  # Part of the pending line was already shown.
    out = [out_fd]
    while True:
        timeout = _PARTIAL_LINE_S if pending else None
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if not ready:
            _write(out, pending)
            pending, continued = b"", True
            continue
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = []
        for line in lines:
            if continued or not is_noise(line):
                kept.append(line + b"\n")
            continued = False
        _write(out, b"".join(kept))
    _write(out, pending)


def _write(out: list[int], data: bytes) -> None:
    """Writes all of `data`; after a failed write, drops all output."""
    while data and out:
        try:
            data = data[os.write(out[0], data) :]
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            # The terminal or pipe is gone: keep reading so the script
            # never blocks on a full pipe, but write nothing more.
            out.clear()


def _wait_for_filter(original: int, pid: int) -> None:
    """At exit: gives stderr back and lets the filter copy its last lines.

    Without the wait, the shell prompt can come before the script's last
    lines (e.g. its `error: ...`).
    """
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(original, 2)  # Closes this process' end of the filter's pipe.
    os.close(original)
    deadline = time.monotonic() + _DRAIN_S
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)
