"""What a user sees while a long job works: progress by batch, with a total.

Every long job (evaluation, DCT statistics, table trials, feature caching)
counts its finished items on one `Progress`. On a terminal it is one line
redrawn in place; anywhere else (a log file, a pipe, CI) it writes plain
lines, one per `PLAIN_STEP_PERCENT` of the total and at least one every
`PLAIN_INTERVAL_S` seconds, never escape codes. Keras' own `Progbar` takes
every POSIX system for a terminal (its bar is ANSI colour codes and
backspaces), which is why it is not used here; `keras_verbose` picks
Keras' one-line-per-epoch mode for `fit` when the output is not a terminal.

Work kept in shards (`rundir.RunDir.map_shards`) reports each batch as it
finishes through `Progress.part`, and a shard read back from an earlier
run all at once (`reused=True`, left out of the time estimate).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = [
    "PLAIN_INTERVAL_S",
    "PLAIN_STEP_PERCENT",
    "Progress",
    "is_terminal",
    "keras_verbose",
]

PLAIN_STEP_PERCENT = 10  # Plain output: a line per this much of the total,
PLAIN_INTERVAL_S = 60.0  # and at least one this often while items finish.
_TERMINAL_INTERVAL_S = 0.2  # Redraws of the terminal line, at most.
_BAR_WIDTH = 20


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default: stdout) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # No isatty, or closed.
        return False


def keras_verbose(verbose: bool, stream: TextIO | None = None) -> int:
    """Keras' `verbose` argument for `fit`: what `Progress` does, for Keras.

    Args:
      verbose: show progress at all.
      stream: where Keras prints (stdout).

    Returns:
      0: nothing; 1: Keras' live bar (a terminal only); 2: one plain line
      per epoch (log files, pipes).
    """
    if not verbose:
        return 0
    return 1 if is_terminal(stream) else 2


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    if hours:
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts finished items and shows them on stdout.

    Attributes:
      total: the number of items, None if unknown.
      count: items finished so far.
    """

    def __init__(
        self,
        total: int | None,
        unit: str = "image",
        label: str = "",
        verbose: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Starts counting; nothing is shown before the first item.

        Args:
          total: the number of items, None if unknown.
          unit: what an item is, singular ("image", "trial").
          label: what the job does, at the start of every line.
          verbose: False shows nothing (the counts still add up).
          stream: where to write; None: `sys.stdout` at each write.
          clock: seconds (tests pass their own).
        """
        self.total = total
        self.count = 0
        self._unit = unit
        self._label = label
        self._verbose = verbose
        self._stream = stream
        self._clock = clock
        self._start = clock()
        # The time estimate uses only items computed in this run.
        self._computed = 0
        self._computed_since: float | None = None
        self._last_shown = -float("inf")
        self._last_step = 0
        self._width = 0  # Of the terminal line drawn last.
        self._finished = False

    @property
    def _out(self) -> TextIO:
        return sys.stdout if self._stream is None else self._stream

    def add(self, n: int, reused: bool = False) -> None:
        """Counts `n` more finished items and shows them when due.

        Args:
          n: items finished.
          reused: read back from an earlier run rather than computed; they
            count, but not in the estimate of the time left.
        """
        now = self._clock()
        if n > 0 and not reused:
            if self._computed_since is None:
                # From the end of the first batch: its time includes the
                # model's tracing, which later batches do not pay.
                self._computed_since = now
            else:
                self._computed += n
        self.count += n
        if self._verbose and not self._finished:
            self._show(now)

    @contextlib.contextmanager
    def part(self, size: int) -> Iterator[Callable[[int], None]]:
        """Counts one part of the work (a shard) of exactly `size` items.

        Yields:
          `report(n)`, for the part's work to call per batch. Over the
          whole part it counts at most `size`; when the block ends
          normally the rest is counted (items the work skipped), so the
          part always adds exactly `size`.
        """
        done = [0]

        def report(n: int) -> None:
            n = min(n, size - done[0])
            if n > 0:
                done[0] += n
                self.add(n)

        yield report
        if done[0] < size:
            self.add(size - done[0])

    def close(self) -> None:
        """Shows the final count (once), ending the terminal line."""
        if self._verbose and not self._finished:
            self._show(self._clock(), final=True)

    def __enter__(self) -> Progress:
        """Returns self; `close` runs at the end of the block."""
        return self

    def __exit__(self, *exc_info) -> None:
        """Calls `close`."""
        self.close()

    def line(self, now: float | None = None) -> str:
        """The state as one line of text, without a line end."""
        now = self._clock() if now is None else now
        return self._prefix() + self._body(now)

    def _prefix(self) -> str:
        return f"{self._label}: " if self._label else ""

    def _body(self, now: float) -> str:
        elapsed = _duration(now - self._start)
        if not self.total:
            unit = self._unit if self.count == 1 else f"{self._unit}s"
            return f"{self.count} {unit}, {elapsed} elapsed"
        unit = self._unit if self.total == 1 else f"{self._unit}s"
        percent = 100.0 * self.count / self.total
        text = (
            f"{self.count}/{self.total} {unit} ({percent:.0f}%), "
            f"{elapsed} elapsed"
        )
        left = self._seconds_left(now)
        if left is not None and self.count < self.total:
            text += f", about {_duration(left)} left"
        return text

    def _seconds_left(self, now: float) -> float | None:
        if self._computed_since is None or not self._computed:
            return None
        rate = self._computed / max(now - self._computed_since, 1e-9)
        return (self.total - self.count) / rate

    def _show(self, now: float, final: bool = False) -> None:
        final = final or (self.total is not None and self.count >= self.total)
        if is_terminal(self._out):
            if final or now - self._last_shown >= _TERMINAL_INTERVAL_S:
                self._draw(now, final)
        else:
            step = (
                int(self.count * 100 / self.total) // PLAIN_STEP_PERCENT
                if self.total
                else 0
            )
            if (
                final
                or step > self._last_step
                or now - self._last_shown >= PLAIN_INTERVAL_S
            ):
                self._out.write(self.line(now) + "\n")
                self._out.flush()
                self._last_step = step
                self._last_shown = now
        self._finished = final

    def _draw(self, now: float, final: bool) -> None:
        text = self._body(now)
        if self.total:
            filled = min(_BAR_WIDTH, _BAR_WIDTH * self.count // self.total)
            text = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {text}"
        text = self._prefix() + text
        # Spaces over what is left of a longer previous line.
        padding = " " * max(0, self._width - len(text))
        self._out.write("\r" + text + padding + ("\n" if final else ""))
        self._out.flush()
        self._width = len(text)
        self._last_shown = now
