r"""JPEG tables fitted to a model at byte budgets (DeepN-JPEG, Liu et al. 2018).

DeepN-JPEG's tables come from image statistics alone. This fits table
families to a model instead ("plm": the paper's piece-wise linear mapping
with free parameters and separate luma/chroma scales; "standard": the Annex
K tables with a frequency tilt and a chroma/luma ratio), on the fit half of
the images (`--split_seed`), at the byte totals of standard JPEG at each
--budget_qualities QF on those images, maximising top-1 (plus the mean
true-label probability as a tie-breaker) with Nelder-Mead. Prints the
search's result on the fit images and writes trials.jsonl (every trial),
qtables_fit-<family>-qf<Q>.json/.txt and fit_summary.json to --workdir.
The held-out half is evaluated by eval_deepn_jpeg.py:

    python -m experiments.design_qtable --data=/path/to/imagenet-sample \
        --split=fit --workdir=runs/design_fit
    python -m experiments.fit_qtable --data=/path/to/imagenet-sample \
        --workdir=runs/fit
    python -m experiments.eval_deepn_jpeg --data=/path/to/imagenet-sample \
        --split=heldout --tables=runs/design_fit,runs/fit \
        --gain_drops=0,0.5,1,2,3,4,5 --workdir=runs/fit_heldout

Expected on the sample images (split seed 0, efficientnet_lite0): on the
held-out half the fitted "standard" tables need about 1.2x fewer bytes
than standard JPEG at the original's top-1 minus 1 and minus 4 points
(90% bootstrap intervals reach down to about 0.95x); the fitted "plm"
tables and the paper's PLM need more bytes than JPEG (README.md).

With efficientnet_lite0 on 2 CPU cores a trial takes about 6 s on the 250
fit images of the sample (3-4 encoding passes to meet the budget, one model
pass): about 25 minutes with the defaults (2 families x 3 budgets x 40
trials), then about 7 minutes for the held-out evaluation above.
`--resume` replays the logged trials of an interrupted run and goes on.
`--smoke`: 16 images, one budget, 3 trials (a quick check).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg import fit
from experiments import common

_DEFAULTS = fit.Config()
_MODEL = common.define_model_flags(_DEFAULTS.model)
_DATA = common.define_data_flags()
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_SPLIT_SEED = flags.DEFINE_integer(
    "split_seed", _DEFAULTS.split_seed, "Seed of the fit/heldout split."
)
_FAMILIES = flags.DEFINE_list(
    "families", list(_DEFAULTS.families), f"Table families {fit.FAMILIES}."
)
_BUDGETS = flags.DEFINE_list(
    "budget_qualities",
    [str(q) for q in _DEFAULTS.budget_qualities],
    "Byte budgets: standard JPEG's bytes at these QFs on the fit images.",
)
_MAX_TRIALS = flags.DEFINE_integer(
    "max_trials", _DEFAULTS.max_trials, "Trials per family and budget."
)
_TIE_WEIGHT = flags.DEFINE_float(
    "tie_weight",
    _DEFAULTS.tie_weight,
    "Score = top-1 + tie_weight * mean true-label probability.",
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", _DEFAULTS.batch_size, "Images per model call."
)
_NUM_THREADS = flags.DEFINE_integer(
    "num_threads", _DEFAULTS.num_threads, "Encoder threads (0: one per CPU)."
)
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Global random seed.")
_RESUME = common.define_resume_flag("search (replays its logged trials)")
_SMOKE = flags.DEFINE_bool("smoke", False, "16 images, 1 budget, 3 trials.")


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Fits and exports the tables."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    smoke = _SMOKE.value
    config = fit.Config(
        model=_MODEL.model.value,
        weights=_MODEL.weights_value,
        data=_DATA.data.value,
        limit=16 if smoke else _DATA.limit.value,
        tfds_data_dir=_DATA.tfds_data_dir.value,
        split_seed=_SPLIT_SEED.value,
        families=tuple(_FAMILIES.value),
        budget_qualities=common.qualities(_BUDGETS)[: 1 if smoke else None],
        max_trials=3 if smoke else _MAX_TRIALS.value,
        tie_weight=_TIE_WEIGHT.value,
        batch_size=_BATCH_SIZE.value,
        num_threads=_NUM_THREADS.value,
        seed=_SEED.value,
    )
    fit.run(config, _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
