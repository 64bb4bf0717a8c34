r"""Compression Helps (Yang et al. 2021): candidates, selectors, report.

Evaluates the original and its JPEG versions at every QF with one or more
classifiers, then prints the paper-style table (top-1, top-5, CR for each
candidate, HRS and the label-free selectors) and writes, per model,
<workdir>/<model>/predictions.npz, report.json, report.csv and
accuracy_vs_cr.png, and the models side by side in <workdir>/summary.md and
summary.csv (<model>: the registry name, or the model file's name without
its extension).

    python -m experiments.run_selectors --model=efficientnet_lite0 \
        --data=/path/to/imagenet-sample --workdir=runs/lite0

About 1 min 30 s for 500 images on 2 CPU cores (see README.md for the table).

`--model=a,b,...` evaluates several models in one pass: the JPEG work
(decode, encode at every QF, decode every candidate) is done once, and each
model crops, resizes and normalises the candidates its own way; each model's
predictions.npz is the one a run of it alone writes. `--candidates=DIR`
keeps the candidate files in a store (TFRecord shards, keyed by the QFs,
the encoder, TensorFlow's version and the data): the first run encodes and
writes them, later runs of the same images and QFs (another model, a
rerun) read them instead of encoding; a store of another key is refused.

`--resume` continues an interrupted run in the same --workdir (same models
and settings); `--report_only` rebuilds the reports from the predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from compression_helps.selection import runner
from experiments import common

_CONFIG = common.define_config_flags(runner.Config)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Output directory.")
_RESUME = common.define_resume_flag()
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Rebuild the reports from predictions.npz."
)


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Runs the evaluation or rebuilds the reports."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if _REPORT_ONLY.value:
        runner.rebuild_report(_WORKDIR.value)
        return
    runner.run(_CONFIG.value(), _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
