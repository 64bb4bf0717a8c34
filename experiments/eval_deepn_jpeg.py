r"""DeepN-JPEG (Liu et al. 2018): rate-accuracy against standard JPEG.

Scales the DeepN-JPEG tables and the standard JPEG tables over the same
quality grid, writes every image with each (Pillow/libjpeg-turbo, optimized
Huffman, 4:2:0), classifies all of them, and prints top-1/top-5 against bits
per pixel and CR, and the gain at equal top-1 (JPEG bytes / DeepN bytes at
the original's top-1 minus each --gain_drops point). Writes
rate_accuracy.json and rate_accuracy.png to --workdir.

    python -m experiments.design_qtable --data=/path/to/train_images \
        --workdir=runs/design
    python -m experiments.eval_deepn_jpeg --tables=runs/design \
        --data=/path/to/test_images --workdir=runs/deepn_eval

`--tables` takes several folders/files (e.g. also a fit_qtable.py workdir:
each `qtables_<name>.json` becomes curve `<name>`) and names of the table
sets shipped with the package (`deepn_jpeg/qtables/<name>.json`, curve
`<name>`; `deepn_jpeg.tables.shipped_names()` lists them).
`--encoders=libjpeg,mozjpeg` also writes every curve, standard JPEG
included, with mozjpeg 4.0.3 (progressive, trellis quantization; same
tables): curves `<curve>@mozjpeg`, e.g. `jpeg@mozjpeg`, whose gains show
what the encoder alone saves; the reference stays `jpeg` (libjpeg). A table
set whose file fixes its encoder and/or subsampling is written only with
those. On the first 100 sample images (Annex K tables, 4:2:0) mozjpeg's
files are 17%, 18% and 12% smaller at QF 20, 50 and 80, but it encodes
15-20x slower (25, 50 and 72 ms per image against 1.6, 3.0 and 3.6 ms on
one core), so each `@mozjpeg` curve costs about a minute more per 250
images and 10 qualities on 2 CPU cores (an estimate from those times):

    python -m experiments.eval_deepn_jpeg --tables=runs/design \
        --encoders=libjpeg,mozjpeg --data=/path/to/test_images \
        --workdir=runs/deepn_eval_encoders

`--diagnostics=paper` adds the curves `paper-luma` (DeepN luma, standard
chroma), `paper-chroma` (standard luma, DeepN chroma), `jpeg-lumascale` and
`jpeg-chromascale` (only one standard table scaled, the other at
--diagnostic_quality).
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
`--resume` continues an interrupted run from its finished shards; it is
refused if the settings, the images, the model or a tables file changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg.jobs import rate_accuracy
from experiments import common

# No default tables: --tables must be given.
_CONFIG = common.define_config_flags(
    rate_accuracy.Config,
    defaults=rate_accuracy.Config(tables=None),
    required=("tables",),
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_RESUME = common.define_resume_flag()


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Runs the rate-accuracy comparison."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    rate_accuracy.run(_CONFIG.value(), _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
