"""Checks of settings, shared by every job's `check_config`.

Each job checks its whole config first thing, before it reads an image or
loads a model, so that a bad flag costs seconds, not a data pass: the
scripts turn the one-line `ValueError` into `error: ...` and exit status 2
(`experiments.common.report_errors`). The checks name the setting as its
flag does (`batch_size`, `limit`, ...).
"""

from __future__ import annotations

import math
import numbers
import socket
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DATA_SERVICE_TIMEOUT_S",
    "data_service",
    "integer",
    "number",
    "one_of",
]

# How long a tf.data service dispatcher may take to answer the probe; tf.data
# itself would wait for it forever.
DATA_SERVICE_TIMEOUT_S = 5.0
# HTTP/2 client preface and an empty SETTINGS frame (RFC 9113, Sec. 3.4):
# a gRPC server answers with a SETTINGS frame of its own.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(
    [0, 0, 0, 4, 0, 0, 0, 0, 0]
)
_HTTP2_SETTINGS = 4  # Frame type, the 4th byte of a frame header.


def integer(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    note: str = "",
) -> int:
    """Refuses anything but an integer in [minimum, maximum].

    Args:
      name: the setting, for the message.
      value: its value.
      minimum: smallest allowed value; None: no bound.
      maximum: largest allowed value; None: no bound.
      note: added to the message, e.g. "none: all images".

    Returns:
      The value as an int.

    Raises:
      ValueError: one line naming the setting.
    """
    if minimum is not None and maximum is not None:
        wanted = f"in [{minimum}, {maximum}]"
    elif minimum is not None:
        wanted = f">= {minimum}"
    elif maximum is not None:
        wanted = f"<= {maximum}"
    else:
        wanted = "an integer"
    note = f" ({note})" if note else ""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer{note}, got {value!r}")
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        raise ValueError(f"{name} must be {wanted}{note}, got {value}")
    return int(value)


def number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    open_interval: bool = False,
) -> float:
    """Refuses anything but a finite number between `low` and `high`.

    Args:
      name: the setting, for the message.
      value: its value.
      low: lower bound; None: none.
      high: upper bound; None: none.
      open_interval: the bounds themselves are refused.

    Returns:
      The value as a float.

    Raises:
      ValueError: one line naming the setting.
    """
    bad = not isinstance(value, numbers.Real) or isinstance(value, bool)
    if not bad:
        bad = not math.isfinite(value)
    if not bad and low is not None:
        bad = value <= low if open_interval else value < low
    if not bad and high is not None:
        bad = value >= high if open_interval else value > high
    if not bad:
        return float(value)
    if low is not None and high is not None:
        left, right = "()" if open_interval else "[]"
        wanted = f"in {left}{low}, {high}{right}"
    elif low is not None:
        wanted = f"{'>' if open_interval else '>='} {low}"
    elif high is not None:
        wanted = f"{'<' if open_interval else '<='} {high}"
    else:
        wanted = "a finite number"
    raise ValueError(f"{name} must be {wanted}, got {value!r}")


def choices_of(
    name: str,
    values: Sequence[Any],
    choices: Sequence[Any],
    item: str | None = None,
) -> tuple[Any, ...]:
    """Refuses an empty list, an unknown value or a repeated one.

    Args:
      name: the setting, for the message.
      values: its values.
      choices: the allowed values.
      item: what one value is called in the message (default: `name`).

    Returns:
      The values, as a tuple.

    Raises:
      ValueError: one line naming the setting (and the choices).
    """
    if not values:
        raise ValueError(
            f"{name}: give one or more of {tuple(choices)} ({name} is empty)"
        )
    for value in values:
        one_of(item or name, value, choices)
    if len(set(values)) < len(values):
        raise ValueError(f"{name} must be distinct, got {list(values)}")
    return tuple(values)


def one_of(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Refuses a value that is not one of `choices`.

    Args:
      name: the setting, for the message.
      value: its value.
      choices: the allowed values.

    Returns:
      The value.

    Raises:
      ValueError: one line naming the setting and the choices.
    """
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {tuple(choices)}, got {value!r}"
        )
    return value


def data_service(
    address: str | None, timeout_s: float = DATA_SERVICE_TIMEOUT_S
) -> None:
    """Checks that a tf.data service dispatcher answers at `address`.

    tf.data waits without end (and without a word) for a dispatcher that is
    not there, so the job asks first: a TCP connection, then the HTTP/2
    handshake every gRPC server answers, each within `timeout_s`.

    Args:
      address: `grpc://host:port` or `host:port`; None or "": no service.
      timeout_s: seconds to wait for the connection and for the answer.

    Raises:
      ValueError: a malformed address, or nothing (or no gRPC server)
        answering there.
    """
    if not address:
        return
    protocol, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")  # IPv6: grpc://[::1]:5050
    if (
        protocol not in ("", "grpc")
        or not host
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise ValueError(
            f"data_service must be grpc://host:port, got {address!r}"
        )
    where = f"data_service {address}"
    try:
        with socket.create_connection((host, int(port)), timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(_HTTP2_PREFACE)
            frame_header = conn.recv(9)
    except TimeoutError:
        raise ValueError(
            f"{where}: no answer within {timeout_s:g} s; is the dispatcher "
            "running and reachable?"
        ) from None
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ValueError(
            f"{where}: no dispatcher there ({reason}); start one or leave "
            "out data_service"
        ) from None
    if len(frame_header) < 4 or frame_header[3] != _HTTP2_SETTINGS:
        raise ValueError(f"{where}: something answers, but not a gRPC server")
