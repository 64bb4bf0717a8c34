"""Flags and error handling shared by the experiment scripts.

Every script that classifies images takes the same model and data flags,
defined once here; every script reports usage and data errors the same way:
one line `error: ...` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence

from absl import flags

from compression_helps import candidates, datasets, models

__all__ = [
    "DataFlags",
    "ModelFlags",
    "define_data_flags",
    "define_data_service_flag",
    "define_model_flags",
    "define_qualities_flag",
    "define_resume_flag",
    "define_split_flags",
    "qualities",
    "report_errors",
]


@dataclasses.dataclass(frozen=True)
class ModelFlags:
    """`--model` and `--weights`."""

    model: flags.FlagHolder[str]
    weights: flags.FlagHolder[str]

    @property
    def weights_value(self) -> str | None:
        """`--weights`, with "none" meaning random weights (None)."""
        value = self.weights.value
        return None if value.lower() == "none" else value


@dataclasses.dataclass(frozen=True)
class DataFlags:
    """`--data`, `--limit` and `--tfds_data_dir`."""

    data: flags.FlagHolder[str]
    limit: flags.FlagHolder[int]
    tfds_data_dir: flags.FlagHolder[str]


def define_model_flags(default_model: str = "efficientnet_lite0") -> ModelFlags:
    """Defines `--model` and `--weights`.

    Args:
      default_model: the `--model` default.

    Returns:
      The flag holders.
    """
    return ModelFlags(
        model=flags.DEFINE_string(
            "model",
            default_model,
            f"One of {list(models.REGISTRY)} or a .keras/.h5 model file.",
        ),
        weights=flags.DEFINE_string(
            "weights",
            "imagenet",
            "'imagenet', a weights file, or 'none' (random weights, tests "
            "only).",
        ),
    )


def define_data_flags(required: bool = False) -> DataFlags:
    """Defines `--data`, `--limit` and `--tfds_data_dir`.

    Args:
      required: whether `--data` must be given; otherwise empty means the
        ImageNet sample images, downloaded once.

    Returns:
      The flag holders.
    """
    help_text = "Image folder or tfds:<name>[:<split>]"
    if not required:
        help_text += "; empty: download the ImageNet sample images once"
    return DataFlags(
        data=flags.DEFINE_string(
            "data", None if required else "", help_text + ".", required=required
        ),
        limit=flags.DEFINE_integer("limit", None, "Only the first N images."),
        tfds_data_dir=flags.DEFINE_string(
            "tfds_data_dir", None, "TFDS data dir."
        ),
    )


def define_split_flags(
    what: str,
) -> tuple[flags.FlagHolder[str], flags.FlagHolder[int]]:
    """Defines `--split` and `--split_seed` (`datasets.split`).

    Args:
      what: which images the script uses, for the help text, e.g. "Images
        analysed".

    Returns:
      The `--split` and `--split_seed` flag holders.
    """
    split = flags.DEFINE_enum(
        "split",
        "all",
        list(datasets.SPLITS),
        f"{what}: all, or one half (fit/heldout) of a seeded random split.",
    )
    seed = flags.DEFINE_integer("split_seed", 0, "Seed of the split.")
    return split, seed


def define_qualities_flag() -> flags.FlagHolder[list[str]]:
    """Defines `--qualities`, the JPEG QFs of the candidates."""
    return flags.DEFINE_list(
        "qualities",
        [str(q) for q in candidates.QUALITIES],
        "JPEG quality factors of the candidates.",
    )


def qualities(flag: flags.FlagHolder[list[str]]) -> tuple[int, ...]:
    """The `--qualities` list as integers (ValueError if not integers)."""
    return tuple(int(q) for q in flag.value)


def define_data_service_flag() -> flags.FlagHolder[str]:
    """Defines `--data_service`, a tf.data service for the JPEG work."""
    return flags.DEFINE_string(
        "data_service",
        None,
        "tf.data service dispatcher (grpc://host:port) to run the JPEG work "
        "on.",
    )


def define_resume_flag(what: str = "run") -> flags.FlagHolder[bool]:
    """Defines `--resume`.

    Args:
      what: the interrupted work, for the help text.

    Returns:
      The flag holder.
    """
    return flags.DEFINE_bool(
        "resume",
        False,
        f"Continue an interrupted {what} in --workdir (same settings).",
    )


def report_errors(main: Callable[[Sequence[str]], None]):
    """Decorates a script's `main`: usage and data errors end in one line.

    `ValueError` and `OSError` (unknown model, missing folder, bad QF list,
    unreadable weights, unwritable workdir, ...) print `error: <message>` on
    stderr and exit with status 2; anything else is a bug and keeps its
    traceback.

    Args:
      main: the `absl.app.run` main function.

    Returns:
      The decorated function.
    """

    @functools.wraps(main)
    def wrapped(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped
