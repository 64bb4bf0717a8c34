"""Rate-accuracy of DeepN-JPEG tables against standard JPEG, for one model.

DeepN-JPEG (Liu et al., DAC 2018) claims about 3.5x higher compression than
standard JPEG at the same accuracy. SPEC.md ("Rate points", "Reported
result"): one table is one rate point; each table is scaled IJG-style over a
grid of quality-like factors (quality 50 = the table itself) and compared
with standard JPEG (Annex K tables at the same qualities) on the same images
and model. Both curves are written by the same encoder (Pillow/libjpeg,
optimized Huffman tables, same chroma subsampling), so only the tables
differ. We report top-1/top-5 against bits per pixel and CR (against the
original files), and the gain at equal top-1: JPEG's bytes divided by
DeepN-JPEG's, each interpolated on its curve (`deepn_jpeg.comparison`).

Encoders (not in the paper): `Config.encoders` adds every curve written by
other encoders (`<curve>@mozjpeg`: same tables, trellis quantization);
standard JPEG written by libjpeg stays the reference of every gain. A table
set whose file fixes its encoder or subsampling is written only with those.

Diagnostics (not in the paper) split a table set's effect into its parts,
each one more curve: `<name>-luma` (its luma table with the standard chroma
table, both scaled to the same quality), `<name>-chroma` (standard luma, its
chroma), and, for standard JPEG, `jpeg-lumascale` / `jpeg-chromascale` (only
one of the two standard tables scaled over the grid, the other kept at
`Config.diagnostic_quality`), which show what the luma and the chroma steps
each cost in bytes and accuracy.

The candidates are evaluated by `compression_helps.evaluate` (same pipeline,
sharding, resume and bad-image handling as the Compression Helps runs); the
tables files are inputs of the run folder, so a resumed run refuses tables
rewritten since it began.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from compression_helps.core import checks, files, rundir
from compression_helps.engine import candidates, evaluate, job, ranking
from compression_helps.models import registry
from compression_helps.sources import datasets
from deepn_jpeg.analysis import bootstrap, comparison
from deepn_jpeg.jobs import report
from deepn_jpeg.jpeg import codec, ladder, tables, tableset_files

__all__ = [
    "JOB",
    "PLOT_FILE",
    "RESULT_FILE",
    "Config",
    "Result",
    "check_config",
    "curve_tables",
    "curves",
    "run",
]

JOB = "eval_deepn_jpeg"
JPEG = candidates.JPEG
# Diagnostic curves of standard JPEG: one table scaled, the other fixed.
JPEG_LUMA_SCALE = "jpeg-lumascale"
JPEG_CHROMA_SCALE = "jpeg-chromascale"
RESULT_FILE = "rate_accuracy.json"
PLOT_FILE = "rate_accuracy.png"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` evaluates; the flags of eval_deepn_jpeg.py mirror it.

    Attributes:
      tables: design_qtable.py / fit_qtable.py workdirs (every
        `qtables_<name>.json` in them; curve `<name>`), tables JSON files,
        or names of table sets shipped with the package
        (`tables.shipped_names()`; curve `<name>`), for entries that are
        not existing paths.
      model: the classifier.
      data: the images; split "heldout" evaluates the half that a
        design_qtable.py --split=fit or fit_qtable.py run (same split_seed)
        never saw.
      batch_size: images per model call.
      qualities: the rate grid: IJG quality-like factors applied to the
        standard tables and to every DeepN-JPEG table alike.
      subsampling: chroma subsampling of every candidate file (but those of
        a table set that fixes its own).
      encoders: every curve, standard JPEG included, is written by each
        encoder (`codec.ENCODERS`); curves of encoders other than libjpeg
        are named `<curve>@<encoder>`, e.g. `jpeg@mozjpeg`. Standard JPEG
        is always also written by libjpeg (`jpeg`, the reference of every
        gain); a table set that fixes its encoder is written only by it.
      shard_size: images per results shard (the unit of resuming).
      diagnostics: table sets to split into `<name>-luma` and
        `<name>-chroma` curves; non-empty also adds `jpeg-lumascale` and
        `jpeg-chromascale`.
      diagnostic_quality: quality of the fixed table of jpeg-lumascale and
        jpeg-chromascale.
      gain_drops: gains at the original's top-1 minus these points.
      bootstrap: paired bootstrap resamples of the images for the gains'
        90% intervals (0: none).
      band_drops: the verdict's top-1 band, the original's top-1 minus
        the larger to minus the smaller of these points
        (`comparison.verdict`).
    """

    tables: str | tuple[str, ...] = ()
    model: registry.ModelConfig = registry.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    batch_size: int = 8
    qualities: tuple[int, ...] = candidates.QUALITIES
    subsampling: str = "4:2:0"
    encoders: tuple[str, ...] = (codec.DEFAULT_ENCODER,)
    shard_size: int = evaluate.SHARD_SIZE
    diagnostics: tuple[str, ...] = ()
    diagnostic_quality: int = 50
    gain_drops: tuple[float, ...] = comparison.GAIN_DROPS
    bootstrap: int = 1000
    band_drops: tuple[float, float] = comparison.BAND_DROPS


def curve_tables(
    tablesets: dict[str, tuple[np.ndarray, np.ndarray]],
    quality: int,
    diagnostics: Sequence[str] = (),
    diagnostic_quality: int = 50,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (luma, chroma) tables of every curve at one grid quality.

    Every table is IJG-scaled to `quality` (`tables.scale_qtable`; quality 50
    is the table itself). Standard JPEG (`JPEG`) comes first, then each
    table set, then the diagnostics (see the module docstring).

    Args:
      tablesets: name -> (luma, chroma) at quality 50.
      quality: the grid quality, 1..100.
      diagnostics: table-set names to split into luma-only and chroma-only
        curves; non-empty also adds the standard one-table-scaled curves.
      diagnostic_quality: quality of the table kept fixed in
        `jpeg-lumascale` and `jpeg-chromascale`.

    Returns:
      Curve name -> (luma, chroma), `[8, 8]` int32 each.

    Raises:
      ValueError: a diagnostics name that is not a table set.
    """
    unknown = sorted(set(diagnostics) - set(tablesets))
    if unknown:
        raise ValueError(
            f"diagnostics {unknown} are not table sets ({sorted(tablesets)})"
        )
    std_luma, std_chroma = tables.standard_qtables(quality)
    result = {JPEG: (std_luma, std_chroma)}
    for name, (luma, chroma) in tablesets.items():
        result[name] = (
            tables.scale_qtable(luma, quality),
            tables.scale_qtable(chroma, quality),
        )
    for name in diagnostics:
        luma, chroma = result[name]
        result[f"{name}-luma"] = (luma, std_chroma)
        result[f"{name}-chroma"] = (std_luma, chroma)
    if diagnostics:
        fixed_luma, fixed_chroma = tables.standard_qtables(diagnostic_quality)
        result[JPEG_LUMA_SCALE] = (std_luma, fixed_chroma)
        result[JPEG_CHROMA_SCALE] = (fixed_luma, std_chroma)
    return result


def curves(
    tablesets: dict[str, tables.TableSet], config: Config
) -> list[ladder.Curve]:
    """Every curve of the run, standard JPEG by libjpeg (the reference) first.

    Each curve is written by every encoder of `config.encoders` with
    `config.subsampling`, standard JPEG also by libjpeg; the curves of a
    table set whose file fixes its encoder or subsampling (its diagnostics
    included) only with what the file fixes (`ladder.curves`).

    Args:
      tablesets: the table sets (`check_config`).
      config: the settings.

    Returns:
      The curves, in the order of the candidates.
    """
    reference = ladder.Curve(JPEG, codec.DEFAULT_ENCODER, config.subsampling)
    found = [reference] + [
        curve
        for curve in ladder.curves(
            tablesets, config.encoders, (config.subsampling,)
        )
        if curve != reference
    ]
    for name in config.diagnostics:
        found += [
            dataclasses.replace(curve, tables=f"{name}-{part}")
            for part in ("luma", "chroma")
            for curve in found
            if curve.tables == name
        ]
    if config.diagnostics:
        found += [
            ladder.Curve(scaled, encoder, config.subsampling)
            for scaled in (JPEG_LUMA_SCALE, JPEG_CHROMA_SCALE)
            for encoder in config.encoders
        ]
    return found


def _ladder(
    tablesets: dict[str, tables.TableSet], config: Config
) -> tuple[candidates.Codec, ...]:
    """Every curve's codec at every grid quality, curve by curve."""
    sets = {name: (s.luma, s.chroma) for name, s in tablesets.items()}

    @functools.cache
    def at_quality(quality: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return curve_tables(
            sets, quality, config.diagnostics, config.diagnostic_quality
        )

    def tables_at(name: str, quality: int) -> tuple[np.ndarray, np.ndarray]:
        return at_quality(quality)[name]

    return ladder.codecs(
        curves(tablesets, config),
        config.qualities,
        tables_at,
        config.subsampling,
    )


def check_config(config: Config) -> dict[str, tables.TableSet]:
    """Refuses settings `run` cannot use, before any image or model is read.

    Args:
      config: the settings.

    Returns:
      The table sets of `config.tables` (`tableset_files.load_sets`).

    Raises:
      ValueError: one line naming the bad setting or tables file.
      FileNotFoundError: a tables path without tables.
    """
    config.model.check()
    config.data.check()
    candidates.validate_qualities(config.qualities)
    codec.check_subsampling(config.subsampling)
    checks.choices_of(
        "encoders", config.encoders, codec.ENCODERS, item="encoder"
    )
    checks.integer("batch_size", config.batch_size, 1)
    checks.integer("shard_size", config.shard_size, 1)
    checks.integer("bootstrap", config.bootstrap, 0, note="0: no intervals")
    checks.integer("diagnostic_quality", config.diagnostic_quality, 1, 100)
    drops = [checks.number("gain_drops", d) for d in config.gain_drops]
    if not drops:
        raise ValueError("gain_drops is empty")
    if len(set(drops)) < len(drops):
        raise ValueError(f"gain_drops must be distinct numbers, got {drops}")
    band = [checks.number("band_drops", d, 0.0) for d in config.band_drops]
    if len(band) != 2 or band[0] >= band[1]:
        raise ValueError(f"band_drops must be two drops 0 <= a < b: {band}")
    tablesets = tableset_files.load_sets(config.tables)
    unknown = sorted(set(config.diagnostics) - set(tablesets))
    if unknown:
        raise ValueError(
            f"diagnostics {unknown} are not table sets ({sorted(tablesets)})"
        )
    return tablesets


@dataclasses.dataclass(frozen=True)
class Result:
    """What `run` found.

    Attributes:
      report: the result dict, as written to `rate_accuracy.json`.
      predictions: every image's results for every candidate.
      skipped: the images that could not be evaluated.
    """

    report: dict
    predictions: ranking.Predictions
    skipped: list[rundir.SkippedImage]


def _settings(config: Config, tablesets: Any) -> Config:
    """The settings as `config.json` records them: lists as tuples."""
    del tablesets  # Checked; loaded again where the ladder is built.
    tables_paths = config.tables
    return dataclasses.replace(
        config,
        tables=(tables_paths,)
        if isinstance(tables_paths, str)
        else tuple(tables_paths),
        qualities=tuple(int(q) for q in config.qualities),
    )


def run(
    config: Config,
    workdir: str,
    resume: bool = False,
    verbose: bool = True,
    given: job.Given | None = None,
) -> Result:
    """Evaluates all curves, prints and writes the result and the plot.

    Writes `<workdir>/config.json`, `predictions.npz`, `errors.jsonl`,
    `rate_accuracy.json` and `rate_accuracy.png`.

    Args:
      config: what to evaluate.
      workdir: output directory (see `rundir.RunDir.open`).
      resume: continue an interrupted run in `workdir`: same settings, data,
        tables files and model files.
      verbose: progress bar and printed tables.
      given: the images and classifier of a calling job (`job.Given`).

    Returns:
      The result, its predictions and the skipped images.

    Raises:
      ValueError: bad settings or tables files (before the model loads),
        or a workdir that cannot be resumed.
      FileNotFoundError: missing tables or images.
    """
    table_files = tableset_files.tables_files(config.tables)
    with job.open_job(
        JOB,
        config,
        workdir,
        check_config,
        resume,
        given=given,
        inputs=list(table_files.values()),
        may_change=bootstrap.REPORT_SETTINGS,
        settings=_settings,
    ) as opened:
        config, source, run_dir = opened.config, opened.source, opened.run
        tablesets = opened.checked
        predictions, skipped = evaluate.predict(
            opened.classifier(),
            source,
            _ladder(tablesets, config),
            config.batch_size,
            run=run_dir,
            shard_size=config.shard_size,
            verbose=verbose,
        )
        run_dir.write_npz(ranking.PREDICTIONS_FILE, predictions.to_arrays())
        run_dir.write_errors(skipped)
        result = _result(config, predictions, source, tablesets, len(skipped))
        run_dir.write_json(RESULT_FILE, result)
        with files.atomic_path(run_dir.path(PLOT_FILE)) as tmp_path:
            report.plot_rate_accuracy(result, tmp_path)
    if verbose:
        print(
            f"\n{config.model.name}: {predictions.num_images} images, "
            f"{len(skipped)} skipped\n"
        )
        print(report.rate_accuracy_text(result))
    return Result(result, predictions, skipped)


def _result(
    config: Config,
    predictions: ranking.Predictions,
    source: datasets.Source,
    tablesets: dict[str, tables.TableSet],
    num_errors: int,
) -> dict:
    diagnostic_curves = [
        f"{n}-{part}" for n in config.diagnostics for part in ("luma", "chroma")
    ]
    if config.diagnostics:
        diagnostic_curves += [JPEG_LUMA_SCALE, JPEG_CHROMA_SCALE]
    return {
        "model": config.model.name,
        "n_images": predictions.num_images,
        "images": source.description,
        "n_errors": num_errors,
        "tables": {
            name: {"luma": s.luma.tolist(), "chroma": s.chroma.tolist()}
            for name, s in tablesets.items()
        },
        "diagnostic_curves": diagnostic_curves,
        **bootstrap.summarize(
            predictions, config.gain_drops, config.band_drops, config.bootstrap
        ),
    }
