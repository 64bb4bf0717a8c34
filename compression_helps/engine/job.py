"""The set-up every job shares: check, resolve, open the data, the run folder.

Every job of both papers (`run_selectors`, `compress`, the training job,
DeepN-JPEG's design, fit, sensitivity, rate-accuracy, cross-fit and ship
jobs) starts the same way, through `open`:

1. its `check_config` refuses bad settings in one line, before any image
   or model is read;
2. the data settings are resolved (the sample images' folder filled in, a
   folder path normalised), so `config.json` records what was read;
3. the images are opened (`datasets.DataConfig.load`), or, for a job run
   inside another one, taken from the caller (`Given`): a job that runs
   jobs (cross-fitting, shipping) opens its data and loads its model once
   and hands them down;
4. the run folder is opened (`rundir.RunDir.open`: owned, locked, checked
   for `resume` against the settings, the data's identity and the model and
   input files);
5. the classifier is loaded on first use (`Opened.classifier`), once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from compression_helps.core import rundir
from compression_helps.models import registry
from compression_helps.sources import datasets

__all__ = ["Given", "Opened", "open_finished", "open_job"]


@dataclasses.dataclass(frozen=True)
class Given:
    """What a job running inside another job receives instead of opening it.

    Attributes:
      data: the data settings `source` was opened with, before any split
        (`datasets.DataConfig.whole`).
      source: those images (`DataConfig.load_whole`); the inner job takes
        its own part of them (`DataConfig.part_of`).
      classifiers: the loaded classifiers by model settings; an inner job
        whose `config.model` is one of them does not load it again.
    """

    data: datasets.DataConfig | None = None
    source: datasets.Source | None = None
    classifiers: tuple[
        tuple[registry.ModelConfig, registry.Classifier], ...
    ] = ()

    def with_classifier(
        self, model: registry.ModelConfig, classifier: registry.Classifier
    ) -> Given:
        """The same, with one more loaded classifier."""
        return dataclasses.replace(
            self, classifiers=(*self.classifiers, (model, classifier))
        )


@dataclasses.dataclass
class Opened:
    """A job's opened data and run folder.

    Attributes:
      config: the job's settings, data resolved (as in `config.json`).
      source: the images the job reads.
      run: the run folder, locked until the job's block ends; None where
        the job only reads (`open_job`'s `write`).
      checked: what the job's `check_config` returned.
      given: what the caller handed down (`Given`) and the images of
        `config.data.whole()`, for the job's own inner jobs
        (`handing_down`).
      prepared: what `open_job`'s `prepare` returned.
    """

    config: Any
    source: datasets.Source
    run: rundir.RunDir | None
    checked: Any
    given: Given
    prepared: Any = None

    def classifier(
        self, model: registry.ModelConfig | None = None
    ) -> registry.Classifier:
        """The classifier of `model` (default `config.model`), loaded once."""
        model = self.config.model if model is None else model
        for known, classifier in self.given.classifiers:
            if known == model:
                return classifier
        classifier = model.load()
        self.given = self.given.with_classifier(model, classifier)
        return classifier

    def handing_down(self) -> Given:
        """What an inner job receives: this job's images and classifiers."""
        return self.given


@contextlib.contextmanager
def open_job(
    name: str,
    config: Any,
    workdir: str,
    check: Callable[[Any], Any],
    resume: bool = False,
    *,
    given: Given | None = None,
    models: Sequence[registry.ModelConfig] | None = None,
    inputs: Sequence[str] = (),
    may_change: Sequence[str] = (),
    settings: Callable[[Any, Any], Any] | None = None,
    identity: Callable[[datasets.Source], Any] | None = None,
    prepare: Callable[[Any, datasets.Source], Any] | None = None,
    write: bool = True,
) -> Iterator[Opened]:
    """Checks the settings, opens the data and the run folder of one job.

    Args:
      name: the job's name (`rundir.RunDir.open`).
      config: the job's dataclass config, with `data` (and `model`) fields.
      workdir: the run folder.
      check: the job's `check_config`; its result is `Opened.checked`.
      resume: continue an interrupted run in `workdir`.
      given: the images (and classifiers) of a calling job; None: open
        `config.data` here.
      models: the models whose files are inputs of the run; None:
        `config.model` where the config has one.
      inputs: more files whose content changes the results.
      may_change: settings a resumed run may change.
      settings: `(config, checked) -> config` applied after the data is
        resolved, before `config.json` is written: e.g. the checked
        qualities, lists as tuples.
      identity: `(source) -> the data's identity` recorded for `resume`;
        None: `source.fingerprint`.
      prepare: `(config, source) -> anything`: work on the images that may
        refuse them (one line), before the run folder is touched; its
        result is `Opened.prepared`.
      write: False for a process that only reads what another writes (a
        multi-worker run's non-chief): no run folder is opened
        (`Opened.run` is None).

    Yields:
      The `Opened` job.

    Raises:
      ValueError: bad settings, images given for other data, or a run
        folder that cannot be used.
      FileNotFoundError: no such images.
    """
    checked = check(config)
    config = dataclasses.replace(config, data=config.data.resolved())
    if settings is not None:
        config = settings(config, checked)
    whole = config.data.whole()
    given = given or Given()
    if given.source is None:
        given = dataclasses.replace(
            given, data=whole, source=config.data.load_whole()
        )
    elif given.data != whole:
        raise ValueError(
            f"{name}: given the images of {given.data}, not of {whole}"
        )
    source = config.data.part_of(given.source)
    if models is None:
        models = (config.model,) if hasattr(config, "model") else ()
    prepared = None if prepare is None else prepare(config, source)
    if not write:
        yield Opened(config, source, None, checked, given, prepared)
        return
    with rundir.RunDir.open(
        workdir,
        name,
        config,
        resume,
        data=source.fingerprint if identity is None else identity(source),
        inputs=[*(f for m in models for f in m.input_files()), *inputs],
        may_change=may_change,
    ) as run:
        yield Opened(config, source, run, checked, given, prepared)


@contextlib.contextmanager
def open_finished(
    name: str, workdir: str, config: Any, record: dict
) -> Iterator[rundir.RunDir]:
    """A finished run's folder, opened to add outputs to it (an export).

    Opened as a resumed run: locked, refused if its input files changed
    since, and what is written through it is the run's (a fresh run there
    removes it). The data is not read again; its recorded identity stands.

    Args:
      name: the job's name.
      workdir: the run's folder.
      config: its settings, as read from its `config.json`.
      record: that `config.json` record.

    Yields:
      The run folder.
    """
    with rundir.RunDir.open(
        workdir,
        name,
        config,
        resume=True,
        data=record.get("data"),
        inputs=list(record.get("inputs", {})),
    ) as run:
        yield run
