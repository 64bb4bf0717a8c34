r"""Compression Helps (Yang et al. 2021): the multi-input model.

Trains, side by side on the same batches, the paper's head over the
concatenated pooled features of the original and its JPEG versions (QF
100..10, one frozen backbone), the single-input control (the same head on
the original only) and a mixing head (learned weights over the candidates'
logits), then scores them and the backbone alone on held-out images: top-1 /
top-5 over all classes and the classes present, and each head minus the
control with a 90% paired bootstrap interval (SPEC.md, "Multi-input model:
heads and their control"). Writes config.json, features.npz,
eval_features.npz, model.keras, TensorBoard logs (logs/), metrics.jsonl,
heldout_top1_per_epoch.png and results.json to --workdir; `--resume`
continues an interrupted run there (also with a larger --epochs), reusing
the cached features. Then experiments/export_savedmodel.py writes a
SavedModel.

Train on one source and evaluate on another (the paper's protocol):

    python -m experiments.train_multi_input --model=efficientnet_lite0 \
        --data=/path/to/imagenette/train --eval_data=/path/to/imagenette/val \
        --workdir=/tmp/mi

or hold out part of one source (`--num_eval`, `--eval_fraction`). For the
ImageNet training set use `--nocache_features` (compression_helps/train.py
says why), best with `--data_service` and `--strategy=mirrored` on GPUs.
`--smoke` is a seconds-long run on a random-weight ResNet-50 V2 at 32x32.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from compression_helps.multi_input import train
from experiments import common

# Training holds images out by its own rule (--num_eval, --eval_fraction).
_CONFIG = common.define_config_flags(train.Config, omit=("split", "split_seed"))
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_RESUME = common.define_resume_flag(
    "run after its last epoch (also with a larger --epochs)"
)
_SMOKE = flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny preset: random-weight resnet50v2 at 32x32, QF 90 and 10, 1 epoch.",
)


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Trains and evaluates."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    config = _CONFIG.value()
    if _SMOKE.value:
        config = train.smoke_config(config)
    train.train_and_evaluate(config, _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
