r"""Makes a table set to ship with the package (not in the paper).

Runs one table design (default: the sensitivity tables searched against the
model, "fit-sensitivity") on the given images and writes
<workdir>/<name>.json with the tables, their encoder and subsampling. The
efficientnet_lite0 tables in deepn_jpeg/qtables/ were made from Imagenette
train only, so that the 500 sample images and Imagenette val stay unseen:

    python -m experiments.ship_qtables --model=efficientnet_lite0 \
        --data=../shared/imagenette/train --encoder=mozjpeg \
        --workdir=runs/ship_lite0
    cp runs/ship_lite0/efficientnet_lite0.json deepn_jpeg/qtables/

`--resume` continues an interrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from deepn_jpeg.jobs import ship
from experiments import common

_CONFIG = common.define_config_flags(ship.Config)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output dir.", required=True)
_RESUME = common.define_resume_flag()


@common.report_errors
def main(argv: Sequence[str]) -> None:
    """Makes and writes the table set."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    ship.run(_CONFIG.value(), _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    app.run(main)
