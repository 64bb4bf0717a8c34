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

from collections.abc import Sequence

from absl import app, flags

from compression_helps import runner
from experiments import common

_DEFAULTS = runner.Config()
_MODEL = common.define_model_flags(_DEFAULTS.model)
_DATA = common.define_data_flags()
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Output directory.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", _DEFAULTS.batch_size, "Images per model call."
)
_QUALITIES = common.define_qualities_flag()
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "Model input size (default: the model's own)."
)
_SHARD_SIZE = flags.DEFINE_integer(
    "shard_size", _DEFAULTS.shard_size, "Images per results shard."
)
_DATA_SERVICE = common.define_data_service_flag()
_JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", False, "Compile the model step with XLA (GPU/TPU)."
)
_MIXED_PRECISION = flags.DEFINE_string(
    "mixed_precision",
    None,
    "Keras dtype policy: mixed_float16 (GPU) or mixed_bfloat16 (TPU).",
)
_RESUME = common.define_resume_flag()
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Rebuild the report from predictions.npz."
)


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Runs the evaluation or rebuilds the report."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if _REPORT_ONLY.value:
        runner.rebuild_report(_WORKDIR.value)
        return
    config = runner.Config(
        model=_MODEL.model.value,
        weights=_MODEL.weights_value,
        data=_DATA.data.value,
        batch_size=_BATCH_SIZE.value,
        limit=_DATA.limit.value,
        qualities=common.qualities(_QUALITIES),
        image_size=_IMAGE_SIZE.value,
        tfds_data_dir=_DATA.tfds_data_dir.value,
        shard_size=_SHARD_SIZE.value,
        data_service=_DATA_SERVICE.value,
        jit_compile=_JIT_COMPILE.value,
        mixed_precision=_MIXED_PRECISION.value,
    )
    runner.run(config, _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
