"""Every table design of the project, by name, made from one set of images.

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

A method names a table design and the jobs that make it:

- "paper", "monotone": DeepN-JPEG's PLM of the images' DCT statistics
  (`design`, all the images; SPEC.md "Piece-wise linear mapping");
- "sensitivity": the model's sensitivity tables (`sensitivity`, a seeded
  sample of `fit_images`; SPEC.md "Sensitivity tables");
- "fit-standard", "fit-sensitivity": the Annex K tables or the sensitivity
  tables searched against the model at the bytes of standard JPEG at
  `fit_quality` (`fit`, the same sample).

`crossfit` makes them once per fold, from the other folds; `ship` makes one
from a whole data set, to ship. Each job runs in its own sub-folder, so an
interrupted design resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Protocol

import numpy as np

from compression_helps.core import checks
from compression_helps.engine import candidates, job
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.jobs import design, fit, sensitivity
from deepn_jpeg.jpeg import codec, tables

__all__ = ["METHODS", "Made", "Settings", "check", "make_tables", "table_name"]

METHODS = (
    "paper",
    "monotone",
    "sensitivity",
    "fit-standard",
    "fit-sensitivity",
)


@dataclasses.dataclass(frozen=True)
class Made:
    """One method's tables, as its job returned and wrote them.

    Attributes:
      path: the `qtables_<table_name>.json` file the job wrote.
      luma: `[8, 8]` luma table.
      chroma: `[8, 8]` chroma table.
    """

    path: str
    luma: np.ndarray
    chroma: np.ndarray


class Settings(Protocol):
    """The settings `make_tables` reads (fields of the jobs' configs).

    Attributes:
      model: the classifier (sensitivities and search).
      methods: designs to make, from `METHODS`.
      subsampling: chroma subsampling the tables are made for.
      fit_images: the sensitivities and the search use a seeded sample of at
        most this many of the images.
      fit_quality: the search's byte budget: standard JPEG at this QF.
      fit_trials: trials per searched family.
      batch_size: images per model call.
    """

    model: registry.ModelConfig
    methods: tuple[str, ...]
    subsampling: str
    fit_images: int
    fit_quality: int
    fit_trials: int
    batch_size: int


def check(settings: Settings) -> None:
    """Refuses design settings `make_tables` cannot use (one line).

    Raises:
      ValueError: no or unknown methods, or a bad number.
    """
    checks.choices_of("methods", settings.methods, METHODS)
    candidates.validate_qualities([settings.fit_quality])
    codec.check_subsampling(settings.subsampling)
    for name in ("fit_images", "fit_trials", "batch_size"):
        checks.integer(name, getattr(settings, name), 1)


def table_name(method: str, fit_quality: int) -> str:
    """The table set (and curve) name a method's tables are written as."""
    if method.startswith("fit-"):
        return f"{method}-qf{fit_quality}"
    return method


def make_tables(
    settings: Settings,
    data: datasets.DataConfig,
    root: str,
    resume: bool,
    verbose: bool,
    given: job.Given | None = None,
) -> dict[str, Made]:
    """Makes every method's tables from `data`.

    Args:
      settings: what to make (`Settings`).
      data: the images the designs may see (e.g. a fold's "fit" part).
      root: the folder of the jobs' sub-folders (design, sensitivity, fit).
      resume: resume each job (a job without a finished config starts).
      verbose: progress bars and printed tables.
      given: the images of `data.whole()` and the classifier, opened once
        by the calling job (`job.Given`).

    Returns:
      Method -> its tables and their file, in `settings.methods` order.
    """
    wanted = set(settings.methods)
    fit_data = dataclasses.replace(data, sample=settings.fit_images)
    made: dict[str, tuple[str, tuple[np.ndarray, np.ndarray]]] = {}
    variants = [m for m in tables.PLM_VARIANTS if m in wanted]
    if variants:
        folder = os.path.join(root, "design")
        designed = design.run(
            design.Config(data=data, per_class=None, variants=variants),
            folder,
            resume=resume,
            verbose=verbose,
            given=given,
        )
        made.update((v, (folder, designed.qtables[v])) for v in variants)
    sensitivity_dir = os.path.join(root, "sensitivity")
    if wanted & {"sensitivity", "fit-sensitivity"}:
        measured = sensitivity.run(
            sensitivity.Config(
                model=settings.model,
                data=fit_data,
                chroma_subsampling=settings.subsampling,
                batch_size=settings.batch_size,
            ),
            sensitivity_dir,
            resume=resume,
            verbose=verbose,
            given=given,
        )
        made["sensitivity"] = (sensitivity_dir, measured.qtables)
    searched = [m for m in settings.methods if m.startswith("fit-")]
    if searched:
        families = tuple(m.removeprefix("fit-") for m in searched)
        folder = os.path.join(root, "fit")
        summary = fit.run(
            fit.Config(
                model=settings.model,
                data=fit_data,
                families=families,
                sensitivity_tables=sensitivity_dir
                if "sensitivity" in families
                else "",
                budget_qualities=(settings.fit_quality,),
                max_trials=settings.fit_trials,
                subsampling=settings.subsampling,
            ),
            folder,
            resume=resume,
            verbose=verbose,
            given=given,
        )
        (budget,) = summary["budgets"]
        for fitted in budget["fitted"]:
            best = fitted["best"]
            made[f"fit-{fitted['family']}"] = (
                folder,
                (np.asarray(best["luma"]), np.asarray(best["chroma"])),
            )
    return {
        method: Made(
            os.path.join(
                made[method][0],
                tables.qtables_filename(
                    table_name(method, settings.fit_quality), "json"
                ),
            ),
            *made[method][1],
        )
        for method in settings.methods
    }
