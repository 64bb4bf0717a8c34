r"""DeepN-JPEG (Liu et al. 2018): quantization tables from data set statistics.

Computes the 8x8 DCT band statistics of the images (FCA, Sec. 3.2) and maps
them to luma and chroma tables with the piece-wise linear mapping (PLM,
Sec. 3.3), for the "paper" parameters and the "monotone" variant. Prints the
std and tables as 8x8 grids and writes to --workdir: config.json,
statistics.json, qtables_<variant>.json, qtables_<variant>.txt (for
`cjpeg -qtables`), summary.txt, design.png (heat-maps next to standard
JPEG at QF 50) and errors.jsonl (images skipped, with the reason).

    python -m experiments.design_qtable --data=/path/to/imagenet-sample \
        --workdir=/tmp/design

`--split=fit` analyses only the fit half of a seeded random split
(`--split_seed`), so that `eval_deepn_jpeg.py --split=heldout` evaluates
the tables on images they were not designed on. `--resume` continues an
interrupted run in the same --workdir (same flags, same images).

About 10 seconds for the 500 ImageNet sample images on 2 CPU cores. The
tables are in README.md. `--smoke` analyses 8 images (a quick check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg.jobs import design
from deepn_jpeg.jpeg import tables
from experiments import common

SMOKE_LIMIT = 8

_CONFIG = common.define_config_flags(
    design.Config, required=("data",), omit=("variants",)
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_VARIANT = flags.DEFINE_enum(
    "variant", "both", [*tables.PLM_VARIANTS, "both"], "PLM variant(s)."
)
_RESUME = common.define_resume_flag()
_SMOKE = flags.DEFINE_bool(
    "smoke", False, f"Analyse only {SMOKE_LIMIT} images."
)


def config_from_flags() -> design.Config:
    """The config the parsed flags give (`--per_class=0`: all images)."""
    config = _CONFIG.value(
        variants=(
            tables.PLM_VARIANTS
            if _VARIANT.value == "both"
            else (_VARIANT.value,)
        )
    )
    if not config.per_class:
        config = dataclasses.replace(config, per_class=None)
    if _SMOKE.value:
        data = dataclasses.replace(config.data, limit=SMOKE_LIMIT)
        config = dataclasses.replace(config, data=data)
    return config


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Designs the tables and prints them."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    result = design.run(config_from_flags(), _WORKDIR.value, _RESUME.value)
    print(result.summary)


if __name__ == "__main__":
    app.run(main)
