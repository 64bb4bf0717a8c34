r"""Compression Helps (Yang et al. 2021): the multi-input model.

Trains a new softmax head over the concatenated pooled features of the
original and its JPEG versions (QF 100..10), all through one frozen
backbone, and compares its held-out top-1/top-5 with the backbone alone
(SPEC.md, "Multi-input model"). Writes config.json, features.npz,
model.keras, TensorBoard logs (logs/), metrics.jsonl and results.json to
--workdir; `--resume` continues an interrupted run there (also with a larger
--epochs), reusing the cached features. Then
experiments/export_savedmodel.py writes a SavedModel.

    python -m experiments.train_multi_input --model=efficientnet_lite0 \
        --data=/path/to/imagenet-sample --num_eval=100 --seed=0 \
        --workdir=/tmp/mi

About 3 minutes for the 500 sample images on 2 CPU cores, almost all of it
computing the features once. Held-out top-1/top-5 (seed 0, 400/100 split,
10 epochs): backbone alone 87% / 95%, multi-input model 66% / 91%. The
sample has one image per class, so the held-out images' classes never occur
in training and the head learns to favour the 400 training classes. The
paper's setting needs many images per class, e.g.
`--data=tfds:imagenet2012:train --num_eval=50000 --nocache_features`
(compression_helps/train.py says why not the cache), best with
`--data_service` and `--strategy=mirrored` on GPUs.
`--smoke` is a seconds-long run on a random-weight ResNet-50 V2 at 32x32.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from compression_helps import train
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
