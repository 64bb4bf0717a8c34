r"""DeepN-JPEG (Liu et al. 2018): quantization tables from data set statistics.

Computes the 8x8 DCT band statistics of the images (FCA, Sec. 3.2) and maps
them to luma and chroma tables with the piece-wise linear mapping (PLM,
Sec. 3.3), for the "paper" parameters and the "monotone" variant. Prints the
std and tables as 8x8 grids and writes to --workdir: config.json,
statistics.json, qtables_<variant>.json, qtables_<variant>.txt (for
`cjpeg -qtables`), summary.txt and design.png (heat-maps next to standard
JPEG at QF 50).

    python -m experiments.design_qtable --data=/path/to/imagenet-sample \
        --workdir=/tmp/design

`--split=fit` analyses only the fit half of a seeded random split
(`--split_seed`), so that `eval_deepn_jpeg.py --split=heldout` evaluates
the tables on images they were not designed on.

About 10 seconds for the 500 ImageNet sample images on 2 CPU cores. The
tables are in README.md. `--smoke` analyses 8 images (a quick check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg import design, statistics, tables
from experiments import common

_DEFAULTS = design.Config(data="")
_DATA = common.define_data_flags(required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_PER_CLASS = flags.DEFINE_integer(
    "per_class",
    _DEFAULTS.per_class,
    "At most N images per label (unlabelled: all); 0: all images.",
)
_SPLIT, _SPLIT_SEED = common.define_split_flags("Images analysed")
_VARIANT = flags.DEFINE_enum(
    "variant", "both", [*tables.PLM_VARIANTS, "both"], "PLM variant(s)."
)
_CHROMA_SUBSAMPLING = flags.DEFINE_enum(
    "chroma_subsampling",
    _DEFAULTS.chroma_subsampling,
    list(statistics.CHROMA_SUBSAMPLINGS),
    "Chroma resolution analysed (the paper: 4:4:4).",
)
_SHARD_SIZE = flags.DEFINE_integer(
    "shard_size", _DEFAULTS.shard_size, "Images per statistics shard."
)
_RESUME = common.define_resume_flag()
_REFERENCE_QUALITY = flags.DEFINE_integer(
    "reference_quality",
    _DEFAULTS.reference_quality,
    "QF of the standard JPEG tables shown for comparison.",
)
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Sampling seed.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Analyse only 8 images.")
# --plm_a, --plm_b, ..., --plm_q_min.
_PLM = {
    field.name: flags.DEFINE_float(
        f"plm_{field.name}",
        getattr(_DEFAULTS.plm, field.name),
        f"PLM parameter {field.name} (monotone derives c itself).",
    )
    for field in dataclasses.fields(tables.PlmParams)
}


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Designs the tables and prints them."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    variants = (
        tables.PLM_VARIANTS if _VARIANT.value == "both" else (_VARIANT.value,)
    )
    config = design.Config(
        data=_DATA.data.value,
        tfds_data_dir=_DATA.tfds_data_dir.value,
        per_class=_PER_CLASS.value or None,
        limit=8 if _SMOKE.value else _DATA.limit.value,
        split=_SPLIT.value,
        split_seed=_SPLIT_SEED.value,
        variants=variants,
        plm=tables.PlmParams(**{name: f.value for name, f in _PLM.items()}),
        seed=_SEED.value,
        chroma_subsampling=_CHROMA_SUBSAMPLING.value,
        reference_quality=_REFERENCE_QUALITY.value,
        shard_size=_SHARD_SIZE.value,
    )
    result = design.run(config, _WORKDIR.value, resume=_RESUME.value)
    print(result.summary)


if __name__ == "__main__":
    app.run(main)
