r"""DNN-oriented JPEG against standard JPEG, cross-fitted (not in the paper).

For each of --folds seeded folds of the images, makes every table design
(DeepN-JPEG's PLM "paper" and "monotone" tables from DCT statistics, the
model's sensitivity tables, and tables searched against the model) from the
other folds only, evaluates them and standard JPEG on the fold over the
--qualities grid with each --encoders, and pools the folds. Prints and
writes (crossfit.json, crossfit.png) each curve's band gain over standard
JPEG (libjpeg-turbo, optimized Huffman): the geometric-mean bytes ratio over
the top-1 band of the original minus 5 to minus 1 points, with a 90% paired
bootstrap interval over the images.

    python -m experiments.crossfit_deepn_jpeg --model=efficientnet_lite0 \
        --data=../shared/imagenet-sample --workdir=runs/crossfit_sample

`--resume` continues an interrupted run from its last finished step
(design, sensitivity, search, evaluation shard of each fold); it is
refused if the settings, the images or the model changed. `--smoke`: the
first 32 images, two methods, one encoder, 3 trials (a quick check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg.jobs import crossfit
from experiments import common

_CONFIG = common.define_config_flags(crossfit.Config)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_RESUME = common.define_resume_flag()
_SMOKE = flags.DEFINE_bool(
    "smoke", False, "32 images, 2 methods, 1 encoder, 3 trials."
)


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Runs the cross-fitted comparison."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    config = _CONFIG.value()
    if _SMOKE.value:
        config = dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, limit=32),
            methods=("monotone", "fit-standard"),
            encoders=("libjpeg",),
            fit_trials=3,
            bootstrap=100,
        )
    crossfit.run(config, _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
