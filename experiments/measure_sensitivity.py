r"""JPEG tables from a model's sensitivity to each DCT band (after OptS).

Ahmed H. Salamah, Kaixiang Zheng, Linfeng Ye, En-Hui Yang. "JPEG Compliant
Compression for DNN Vision." ICIP 2023 (OptS). Measures, per 8x8 DCT band
of Y, Cb and Cr, the mean squared gradient of the model's loss with respect
to the band's coefficient (label-free "kl" by default: the Fisher
information of the model's own prediction; "xent": cross-entropy with the
labels) and turns it into one luma and one chroma table, step proportional
to sensitivity^(-1/2), scaled to the geometric mean of JPEG's luma table at
QF 50 (SPEC.md, "Sensitivity tables (ours, after OptS)"). Prints the
sensitivities and tables and writes to --workdir: config.json,
sensitivity.npz, qtables_sensitivity.json, qtables_sensitivity.txt (for
`cjpeg -qtables`), summary.txt and errors.jsonl (images skipped, with the
reason).

    python -m experiments.measure_sensitivity --model=efficientnet_lite0 \
        --data=/path/to/imagenet-sample --limit=64 --workdir=/tmp/sens64

`eval_deepn_jpeg.py --tables=/tmp/sens64` then evaluates the tables (curve
"sensitivity"); use `--split=fit` here and `--split=heldout` there to keep
the images apart. `--resume` continues an interrupted run in the same
--workdir (same flags, same images).

With efficientnet_lite0 on 2 CPU cores the command above takes about 55 s:
about 25 s to load the model and trace it, then about 0.3 s per image (one
forward and one backward pass, batches of 8). `--smoke` measures 8 images
(about 20 s, a quick check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg.jobs import sensitivity
from experiments import common

SMOKE_LIMIT = 8

_CONFIG = common.define_config_flags(sensitivity.Config)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_RESUME = common.define_resume_flag()
_SMOKE = flags.DEFINE_bool(
    "smoke", False, f"Measure only {SMOKE_LIMIT} images."
)


def config_from_flags() -> sensitivity.Config:
    """The config the parsed flags give (`--per_class=0`: all images)."""
    config = _CONFIG.value()
    if not config.per_class:
        config = dataclasses.replace(config, per_class=None)
    if _SMOKE.value:
        data = dataclasses.replace(config.data, limit=SMOKE_LIMIT)
        config = dataclasses.replace(config, data=data)
    return config


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Measures the sensitivities and prints the tables."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    config = config_from_flags()
    result = sensitivity.run(config, _WORKDIR.value, _RESUME.value)
    print(result.summary)


if __name__ == "__main__":
    app.run(main)
