"""Makes a table set to ship (SPEC.md, "Table set files and shipped sets").

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

`crossfit` decides which design beats standard JPEG on images it never saw;
this job makes that design once from a whole (training) data set with
`methods.make_tables` and writes it as a self-contained table set,
`<workdir>/<name>.json`: the tables, the encoder and chroma subsampling they
were chosen for, and where they came from. Copied into
`deepn_jpeg/jpeg/qtables/`, it loads by name (`tables.load_tableset(name)`,
`codec.encode(image, tables=name, scale=...)`, `eval_deepn_jpeg
--tables=name`).
"""

from __future__ import annotations

import dataclasses
import os

from compression_helps.engine import job
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.jobs import methods
from deepn_jpeg.jpeg import codec, tables

__all__ = ["JOB", "Config", "check_config", "run"]

JOB = "ship_qtables"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` makes; the flags of ship_qtables.py mirror it.

    Attributes:
      model: the classifier the tables are for.
      data: the images the design may see (never the evaluation images).
      method: the design, from `methods.METHODS`.
      name: the table set's name (its file `<name>.json`).
      encoder: the encoder the tables are shipped with (`codec.ENCODERS`).
      subsampling: chroma subsampling they are made and shipped for.
      fit_images: the sensitivities and the search use a seeded sample of at
        most this many images.
      fit_quality: the search's byte budget: standard JPEG at this QF.
      fit_trials: trials of the search.
      batch_size: images per model call.
    """

    model: registry.ModelConfig = registry.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    method: str = "fit-sensitivity"
    name: str = "efficientnet_lite0"
    encoder: str = "libjpeg"
    subsampling: str = "4:2:0"
    fit_images: int = 500
    fit_quality: int = 50
    fit_trials: int = 20
    batch_size: int = 32

    @property
    def methods(self) -> tuple[str, ...]:
        """The one method, as `methods.Settings` reads it."""
        return (self.method,)


def check_config(config: Config) -> None:
    """Refuses settings `run` cannot use, before any image is read.

    Raises:
      ValueError: one line naming the bad setting.
    """
    config.model.check()
    config.data.check()
    methods.check(config)
    codec.check_encoder(config.encoder)
    if not config.name or os.sep in config.name or "." in config.name:
        raise ValueError(f"name must be a plain file name, got {config.name!r}")


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> str:
    """Makes the design and writes `<workdir>/<name>.json`; returns its path.

    Args:
      config: what to make.
      workdir: output directory (see `rundir.RunDir.open`); the design's
        jobs run in `<workdir>/design`.
      resume: continue an interrupted run (same settings, data and model).
      verbose: progress bars and printed tables.

    Raises:
      ValueError: bad settings, or a workdir that cannot be resumed.
    """
    with job.open_job(
        JOB,
        config,
        workdir,
        check_config,
        resume,
        # The design never uses the encoder: a resume may choose another one
        # for the same tables (the set is written again).
        may_change=("encoder",),
    ) as opened:
        config, source, run_dir = opened.config, opened.source, opened.run
        opened.classifier()
        made = methods.make_tables(
            config,
            config.data,
            run_dir.path("design"),
            resume,
            verbose,
            opened.handing_down(),
        )[config.method]
        luma, chroma = made.luma, made.chroma
        path = run_dir.path(f"{config.name}.json")
        tables.save_json(
            path,
            luma,
            chroma,
            {
                "method": config.method,
                "model": config.model.name,
                "made_from": source.description,
                "fit_images": config.fit_images,
                "fit_quality": config.fit_quality,
            },
            subsampling=config.subsampling,
            encoder=config.encoder,
        )
    if verbose:
        print(tables.format_qtable(luma), "\n")
        print(tables.format_qtable(chroma))
        print(
            f"\n{path}: {config.method} tables for {config.model.name} "
            f"({config.encoder}, {config.subsampling}); copy it into "
            "deepn_jpeg/jpeg/qtables/ to load it by name"
        )
    return path
