r"""Compression Helps (Yang et al. 2021): candidates, selectors, report.

Evaluates the original and its JPEG versions at every QF with one classifier,
then prints the paper-style table (top-1, top-5, CR for each candidate, HRS
and the label-free selectors) and writes predictions.npz, report.json,
report.csv and accuracy_vs_cr.png to --workdir.

    python -m experiments.run_selectors --model=efficientnet_lite0 \
        --data=/path/to/imagenet-sample --workdir=/tmp/run

About 5 minutes for 500 images on 2 CPU cores (see README.md for the table).
`--resume` continues an interrupted run in the same --workdir;
`--report_only` rebuilds the report from an existing predictions.npz.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags

from compression_helps import candidates, models, runner

_DEFAULTS = runner.Config()
_MODEL = flags.DEFINE_string(
    "model",
    _DEFAULTS.model,
    f"One of {list(models.REGISTRY)} or a .keras/.h5 model file.",
)
_WEIGHTS = flags.DEFINE_string(
    "weights",
    _DEFAULTS.weights,
    "'imagenet', a weights file, or 'none' (random weights, tests only).",
)
_DATA = flags.DEFINE_string(
    "data",
    _DEFAULTS.data,
    "Image folder or tfds:<name>[:<split>]; empty: download the ImageNet "
    "sample images once.",
)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Output directory.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", _DEFAULTS.batch_size, "Images per model call."
)
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N images.")
_QUALITIES = flags.DEFINE_list(
    "qualities",
    [str(q) for q in candidates.QUALITIES],
    "JPEG quality factors of the candidates.",
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "Model input size (default: the model's own)."
)
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data dir.")
_SHARD_SIZE = flags.DEFINE_integer(
    "shard_size", _DEFAULTS.shard_size, "Images per results shard."
)
_DATA_SERVICE = flags.DEFINE_string(
    "data_service",
    None,
    "tf.data service dispatcher (grpc://host:port) to run the JPEG work on.",
)
_JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", False, "Compile the model step with XLA (GPU/TPU)."
)
_MIXED_PRECISION = flags.DEFINE_string(
    "mixed_precision",
    None,
    "Keras dtype policy: mixed_float16 (GPU) or mixed_bfloat16 (TPU).",
)
_RESUME = flags.DEFINE_bool(
    "resume", False, "Continue an interrupted run in --workdir."
)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Rebuild the report from predictions.npz."
)


def main(argv: Sequence[str]) -> None:
    """Runs the evaluation or rebuilds the report."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    try:
        if _REPORT_ONLY.value:
            runner.rebuild_report(_WORKDIR.value)
            return
        qualities = tuple(int(q) for q in _QUALITIES.value)
        weights = None if _WEIGHTS.value.lower() == "none" else _WEIGHTS.value
        config = runner.Config(
            model=_MODEL.value,
            weights=weights,
            data=_DATA.value,
            batch_size=_BATCH_SIZE.value,
            limit=_LIMIT.value,
            qualities=qualities,
            image_size=_IMAGE_SIZE.value,
            tfds_data_dir=_TFDS_DATA_DIR.value,
            shard_size=_SHARD_SIZE.value,
            data_service=_DATA_SERVICE.value,
            jit_compile=_JIT_COMPILE.value,
            mixed_precision=_MIXED_PRECISION.value,
        )
        runner.run(config, _WORKDIR.value, resume=_RESUME.value)
    except (ValueError, OSError) as e:  # Usage and data errors: one line.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
