r"""Compression Helps (Yang et al. 2021): candidates, selectors, report.

Evaluates the original and its JPEG versions at every QF with one classifier,
then prints the paper-style table (top-1, top-5, CR for each candidate, HRS
and the label-free selectors) and writes predictions.npz, report.json,
report.csv and accuracy_vs_cr.png to --workdir.

    python -m experiments.run_selectors --model=efficientnet_lite0 \
        --data=/path/to/imagenet-sample --workdir=/tmp/run

About 1 min 30 s for 500 images on 2 CPU cores (see README.md for the table).
`--resume` continues an interrupted run in the same --workdir;
`--report_only` rebuilds the report from an existing predictions.npz.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from compression_helps import runner
from experiments import common

_CONFIG = common.define_config_flags(runner.Config)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Output directory.")
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
    runner.run(_CONFIG.value(), _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
