r"""Exports a trained multi-input model (Yang et al. 2021) as a SavedModel.

Reads model.keras and config.json from a train_multi_input.py --workdir and
writes a SavedModel with two signatures: `serve` (also `serving_default`)
takes the V uint8 candidate images keyed by input name (`original`, `qf100`,
..., `qf10`, each `[B, S, S, 3]`) and returns `[B, 1000]` class
probabilities (`output_0`); `serve_bytes` takes `image_bytes`, a `[B]` batch
of encoded images, makes the JPEG candidates itself and returns
`{"probabilities": [B, 1000], "status": [B]}` ("" for a served file, else
why it was refused). An export inside the workdir (the default,
<workdir>/saved_model) is part of the run: a fresh training run there
removes it.

    python -m experiments.export_savedmodel --workdir=/tmp/mi \
        --export_dir=/tmp/mi/saved_model

About 40 seconds for efficientnet_lite0 on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from compression_helps.multi_input import serving
from experiments import common

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "train_multi_input.py output dir.", required=True
)
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "SavedModel dir (default: <workdir>/saved_model)."
)


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Exports the model."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    print(serving.export_from_workdir(_WORKDIR.value, _EXPORT_DIR.value))


if __name__ == "__main__":
    app.run(main)
