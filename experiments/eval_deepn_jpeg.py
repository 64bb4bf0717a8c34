r"""DeepN-JPEG (Liu et al. 2018): rate-accuracy against standard JPEG.

Scales the DeepN-JPEG tables and the standard JPEG tables over the same
quality grid, writes every image with each (Pillow, optimized Huffman,
4:2:0), classifies all of them, and prints top-1/top-5 against bits per
pixel and CR, and the gain at equal top-1 (JPEG bytes / DeepN bytes at the
original's top-1 minus 0, 0.5 and 1 point). Writes rate_accuracy.json and
rate_accuracy.png to --workdir.

    python -m experiments.design_qtable --data=/path/to/train_images \
        --workdir=runs/design
    python -m experiments.eval_deepn_jpeg --tables=runs/design \
        --data=/path/to/test_images --workdir=runs/deepn_eval

About 5 minutes for 500 images on 2 CPU cores with efficientnet_lite0.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags

from compression_helps import candidates
from deepn_jpeg import rate_accuracy

_DEFAULTS = rate_accuracy.Config(tables="")
_TABLES = flags.DEFINE_string(
    "tables", None, "design_qtable.py workdir or a tables JSON.", required=True
)
_MODEL = flags.DEFINE_string("model", _DEFAULTS.model, "Model name or file.")
_WEIGHTS = flags.DEFINE_string(
    "weights", _DEFAULTS.weights, "'imagenet', a weights file, or 'none'."
)
_DATA = flags.DEFINE_string(
    "data", _DEFAULTS.data, "Image folder or tfds:<name>[:<split>]."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N images.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", _DEFAULTS.batch_size, "Images per model call."
)
_QUALITIES = flags.DEFINE_list(
    "qualities",
    [str(q) for q in candidates.QUALITIES],
    "Quality grid applied to the standard and the DeepN-JPEG tables.",
)
_SUBSAMPLING = flags.DEFINE_enum(
    "subsampling",
    _DEFAULTS.subsampling,
    ["4:4:4", "4:2:2", "4:2:0"],
    "Chroma subsampling of every file.",
)
_RESUME = flags.DEFINE_bool("resume", False, "Continue an interrupted run.")


def main(argv: Sequence[str]) -> None:
    """Runs the rate-accuracy comparison."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    try:
        config = rate_accuracy.Config(
            tables=_TABLES.value,
            model=_MODEL.value,
            weights=None if _WEIGHTS.value == "none" else _WEIGHTS.value,
            data=_DATA.value,
            limit=_LIMIT.value,
            batch_size=_BATCH_SIZE.value,
            qualities=tuple(int(q) for q in _QUALITIES.value),
            subsampling=_SUBSAMPLING.value,
        )
        rate_accuracy.run(config, _WORKDIR.value, resume=_RESUME.value)
    except (ValueError, OSError) as e:  # Usage and data errors: one line.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
