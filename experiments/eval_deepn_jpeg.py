r"""DeepN-JPEG (Liu et al. 2018): rate-accuracy against standard JPEG.

Scales the DeepN-JPEG tables and the standard JPEG tables over the same
quality grid, writes every image with each (Pillow, optimized Huffman,
4:2:0), classifies all of them, and prints top-1/top-5 against bits per
pixel and CR, and the gain at equal top-1 (JPEG bytes / DeepN bytes at the
original's top-1 minus each --gain_drops point). Writes rate_accuracy.json
and rate_accuracy.png to --workdir.

    python -m experiments.design_qtable --data=/path/to/train_images \
        --workdir=runs/design
    python -m experiments.eval_deepn_jpeg --tables=runs/design \
        --data=/path/to/test_images --workdir=runs/deepn_eval

`--tables` takes several folders/files (e.g. also a fit_qtable.py workdir:
each `qtables_<name>.json` becomes curve `<name>`). `--diagnostics=paper`
adds the curves `paper-luma` (DeepN luma, standard chroma), `paper-chroma`
(standard luma, DeepN chroma), `jpeg-lumascale` and `jpeg-chromascale`
(only one standard table scaled, the other at --diagnostic_quality).
`--split=heldout` evaluates only the half of the images that
`design_qtable.py --split=fit` and `fit_qtable.py` (same --split_seed) never
see. The gains come with 90% intervals from a paired bootstrap over the
images (`--bootstrap` resamples):

    python -m experiments.design_qtable --data=/path/to/imagenet-sample \
        --split=fit --workdir=runs/design_fit
    python -m experiments.eval_deepn_jpeg --tables=runs/design_fit \
        --data=/path/to/imagenet-sample --split=heldout --diagnostics=paper \
        --gain_drops=0,0.5,1,2,3,4,5 --workdir=runs/deepn_eval_heldout

About 45 s per curve (10 qualities) for 250 images on 2 CPU cores with
efficientnet_lite0: about 6 minutes for the command above (8 curves).
`--resume` reuses finished shards (e.g. to redo only the report).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg import codec, rate_accuracy
from experiments import common

_DEFAULTS = rate_accuracy.Config(tables="")
_TABLES = flags.DEFINE_list(
    "tables",
    None,
    "design_qtable.py / fit_qtable.py workdirs or tables JSON files.",
    required=True,
)
_MODEL = common.define_model_flags(_DEFAULTS.model)
_DATA = common.define_data_flags()
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_SPLIT, _SPLIT_SEED = common.define_split_flags("Images evaluated")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", _DEFAULTS.batch_size, "Images per model call."
)
# The rate grid, applied to the standard and the DeepN-JPEG tables alike.
_QUALITIES = common.define_qualities_flag()
_SUBSAMPLING = flags.DEFINE_enum(
    "subsampling",
    _DEFAULTS.subsampling,
    list(codec.SUBSAMPLINGS),
    "Chroma subsampling of every file.",
)
_DIAGNOSTICS = flags.DEFINE_list(
    "diagnostics",
    list(_DEFAULTS.diagnostics),
    "Table sets to split into luma-only and chroma-only curves.",
)
_DIAGNOSTIC_QUALITY = flags.DEFINE_integer(
    "diagnostic_quality",
    _DEFAULTS.diagnostic_quality,
    "Quality of the fixed table of jpeg-lumascale/jpeg-chromascale.",
)
_GAIN_DROPS = flags.DEFINE_list(
    "gain_drops",
    [str(d) for d in _DEFAULTS.gain_drops],
    "Gains at the original's top-1 minus these points.",
)
_BOOTSTRAP = flags.DEFINE_integer(
    "bootstrap",
    _DEFAULTS.bootstrap,
    "Paired bootstrap resamples for the gains' 90% intervals (0: none).",
)
_RESUME = common.define_resume_flag()


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Runs the rate-accuracy comparison."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    config = rate_accuracy.Config(
        tables=tuple(_TABLES.value),
        model=_MODEL.model.value,
        weights=_MODEL.weights_value,
        data=_DATA.data.value,
        limit=_DATA.limit.value,
        tfds_data_dir=_DATA.tfds_data_dir.value,
        split=_SPLIT.value,
        split_seed=_SPLIT_SEED.value,
        batch_size=_BATCH_SIZE.value,
        qualities=common.qualities(_QUALITIES),
        subsampling=_SUBSAMPLING.value,
        diagnostics=tuple(_DIAGNOSTICS.value),
        diagnostic_quality=_DIAGNOSTIC_QUALITY.value,
        gain_drops=tuple(float(d) for d in _GAIN_DROPS.value),
        bootstrap=_BOOTSTRAP.value,
    )
    rate_accuracy.run(config, _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
