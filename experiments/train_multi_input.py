r"""Compression Helps (Yang et al. 2021): the multi-input model.

Trains a new softmax head over the concatenated pooled features of the
original and its JPEG versions (QF 100..10), all through one frozen
backbone, and compares its held-out top-1/top-5 with the backbone alone
(SPEC.md, "Multi-input model"). Writes config.json, features.npz,
model.keras, TensorBoard logs (logs/), metrics.jsonl and results.json to
--workdir; `--resume` continues an interrupted run there (also with a larger
--epochs). Then experiments/export_savedmodel.py writes a SavedModel.

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

from compression_helps import multi_input, train
from experiments import common

_DEFAULTS = train.Config()
_MODEL = common.define_model_flags(_DEFAULTS.model)
_DATA = common.define_data_flags()
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_QUALITIES = common.define_qualities_flag()
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "Backbone input size (default: the model's own)."
)
_NUM_EVAL = flags.DEFINE_integer(
    "num_eval", None, "Held-out images (default: --eval_fraction of them)."
)
_EVAL_FRACTION = flags.DEFINE_float(
    "eval_fraction", _DEFAULTS.eval_fraction, "Held-out fraction of images."
)
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Global random seed.")
_HEAD_INIT = flags.DEFINE_enum(
    "head_init",
    _DEFAULTS.head_init,
    multi_input.HEAD_INITS,
    "backbone: start at the backbone's predictions; random: Glorot.",
)
_TRAIN_BACKBONE = flags.DEFINE_bool(
    "train_backbone", _DEFAULTS.train_backbone, "Fine-tune the backbone too."
)
_CACHE_FEATURES = flags.DEFINE_bool(
    "cache_features",
    _DEFAULTS.cache_features,
    "Train the head on cached backbone features (frozen backbone).",
)
_OPTIMIZER = flags.DEFINE_enum(
    "optimizer", _DEFAULTS.optimizer, train.OPTIMIZERS, "Optimizer."
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", _DEFAULTS.learning_rate, "Learning rate."
)
_EPOCHS = flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Epochs.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", _DEFAULTS.batch_size, "Global batch size."
)
_STRATEGY = flags.DEFINE_enum(
    "strategy", _DEFAULTS.strategy, train.STRATEGIES, "tf.distribute strategy."
)
_TPU = flags.DEFINE_string("tpu", _DEFAULTS.tpu, "TPU name for --strategy=tpu.")
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    "num_cpu_devices",
    _DEFAULTS.num_cpu_devices,
    "Split the CPU into this many logical devices (mirrored without GPUs).",
)
_DATA_SERVICE = common.define_data_service_flag()
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
    config = train.Config(
        model=_MODEL.model.value,
        weights=_MODEL.weights_value,
        data=_DATA.data.value,
        limit=_DATA.limit.value,
        tfds_data_dir=_DATA.tfds_data_dir.value,
        qualities=common.qualities(_QUALITIES),
        image_size=_IMAGE_SIZE.value,
        num_eval=_NUM_EVAL.value,
        eval_fraction=_EVAL_FRACTION.value,
        seed=_SEED.value,
        head_init=_HEAD_INIT.value,
        train_backbone=_TRAIN_BACKBONE.value,
        cache_features=_CACHE_FEATURES.value,
        optimizer=_OPTIMIZER.value,
        learning_rate=_LEARNING_RATE.value,
        epochs=_EPOCHS.value,
        batch_size=_BATCH_SIZE.value,
        strategy=_STRATEGY.value,
        tpu=_TPU.value,
        num_cpu_devices=_NUM_CPU_DEVICES.value,
        data_service=_DATA_SERVICE.value,
    )
    if _SMOKE.value:
        config = train.smoke_config(config)
    train.train_and_evaluate(config, _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
