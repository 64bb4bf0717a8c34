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
`--resume` replays the logged trials of an interrupted run and goes on
(also with a larger --max_trials; other changes are refused).
`--smoke`: the fit half (16) of the first 32 images, one budget, 3 trials
(a quick check).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg.jobs import fit
from experiments import common

# The search sees only the "fit" half of the split: no --split flag.
_CONFIG = common.define_config_flags(fit.Config, omit=("split",))
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_RESUME = common.define_resume_flag("search (replays its logged trials)")
_SMOKE = flags.DEFINE_bool(
    "smoke", False, "16 fit images (half of the first 32), 1 budget, 3 trials."
)


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Fits and exports the tables."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    config = _CONFIG.value()
    if _SMOKE.value:
        config = fit.smoke(config)
    fit.run(config, _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
