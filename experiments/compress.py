r"""Compress images for a model: the smallest file that keeps its answer.

Yang et al. 2021's label-free selectors as a compression method. For each
image of --data (a folder of any image files, any depth, no labels needed;
or `tfds:<name>[:<split>]`) the candidates are the original and JPEG
re-encodings at every QF of --qualities (default 100, 95, ..., 5); the
smallest one on which the model gives the answer it gives on the original
(--selector, default keep_top1: the same top-1 class) is written to --out,
under the image's relative path with the extension .jpg (a PNG or WebP
original that is itself chosen keeps its bytes and name).

    python -m experiments.compress --model=efficientnet_lite0 \
        --data=/path/to/images --out=/path/to/smaller --verify

On the 500 ImageNet sample images with efficientnet_lite0: CR 12.8 with
top-1 kept on every image, about 5 min of CPU time on a 2-core machine
(17.6 with --encoders=libjpeg,mozjpeg and QF down to 1, about 19 min; see
README.md, "Shrink a folder of images for your model").

The manifest (manifest.csv, manifest.jsonl), summary.json, a histogram of
the chosen candidates (chosen.png) and the skipped images (errors.jsonl)
are in --out/.compress/. --resume continues an interrupted run; --verify
classifies the written files again; --format=tfrecord writes TFRecord
files instead of a folder.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from compression_helps.compress import compress
from experiments import common

_CONFIG = common.define_config_flags(compress.Config)
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Output folder: the chosen files, and the run's own files in "
    ".compress/. New, empty or an earlier run's; not inside --data.",
    required=True,
)
_RESUME = flags.DEFINE_bool(
    "resume", False, "Continue an interrupted run in --out (same settings)."
)


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Compresses the images."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    compress.run(_CONFIG.value(), _OUT.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
