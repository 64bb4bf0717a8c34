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
import os
from collections.abc import Sequence

import numpy as np

from compression_helps import (
    candidates,
    checks,
    datasets,
    evaluate,
    files,
    models,
    rundir,
)
from deepn_jpeg import codec, comparison, report, tables

__all__ = [
    "JOB",
    "PLOT_FILE",
    "RESULT_FILE",
    "Config",
    "check_config",
    "curve_tables",
    "load_tablesets",
    "run",
    "table_codec",
    "tables_files",
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
        `qtables_<name>.json` in them; curve `<name>`) or tables JSON files.
      model: the classifier.
      data: the images; split "heldout" evaluates the half that a
        design_qtable.py --split=fit or fit_qtable.py run (same split_seed)
        never saw.
      batch_size: images per model call.
      qualities: the rate grid: IJG quality-like factors applied to the
        standard tables and to every DeepN-JPEG table alike.
      subsampling: chroma subsampling of every candidate file.
      shard_size: images per results shard (the unit of resuming).
      diagnostics: table sets to split into `<name>-luma` and
        `<name>-chroma` curves; non-empty also adds `jpeg-lumascale` and
        `jpeg-chromascale`.
      diagnostic_quality: quality of the fixed table of jpeg-lumascale and
        jpeg-chromascale.
      gain_drops: gains at the original's top-1 minus these points.
      bootstrap: paired bootstrap resamples of the images for the gains'
        90% intervals (0: none).
    """

    tables: str | tuple[str, ...] = ()
    model: models.ModelConfig = models.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    batch_size: int = 8
    qualities: tuple[int, ...] = candidates.QUALITIES
    subsampling: str = "4:2:0"
    shard_size: int = evaluate.SHARD_SIZE
    diagnostics: tuple[str, ...] = ()
    diagnostic_quality: int = 50
    gain_drops: tuple[float, ...] = comparison.GAIN_DROPS
    bootstrap: int = 1000


def table_codec(
    curve: str,
    quality: int,
    luma: np.ndarray,
    chroma: np.ndarray,
    subsampling: str = "4:2:0",
) -> candidates.Codec:
    """A candidate codec writing JPEG files with the given tables.

    Args:
      curve: the curve the candidate belongs to (`JPEG` or a table set).
      quality: its grid quality (the tables are already scaled to it).
      luma: `[8, 8]` luma table.
      chroma: `[8, 8]` chroma table.
      subsampling: chroma subsampling, one of `codec.SUBSAMPLINGS`.

    Returns:
      The `candidates.Codec` (`codec.tf_encode`).
    """
    luma, chroma = tables.validate_qtable(luma), tables.validate_qtable(chroma)
    codec.check_subsampling(subsampling)

    def encode(image_uint8):
        return codec.tf_encode(image_uint8, luma, chroma, subsampling)

    return candidates.Codec(curve, quality, encode)


def _files_in(path: str) -> dict[str, str]:
    """Table set name -> its JSON file, for a folder or one file."""
    if os.path.isfile(path):
        name = os.path.splitext(os.path.basename(path))[0]
        return {name.removeprefix("qtables_"): path}
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such tables file or folder")
    # The PLM variants first, in their usual order, then by name.
    names = sorted(
        (
            f.removeprefix("qtables_").removesuffix(".json")
            for f in os.listdir(path)
            if f.startswith("qtables_") and f.endswith(".json")
        ),
        key=lambda n: (
            tables.PLM_VARIANTS.index(n)
            if n in tables.PLM_VARIANTS
            else len(tables.PLM_VARIANTS),
            n,
        ),
    )
    if not names:
        raise FileNotFoundError(
            f"{path}: no qtables_<name>.json (run design_qtable.py or "
            "fit_qtable.py first)"
        )
    return {
        name: os.path.join(path, tables.qtables_filename(name, "json"))
        for name in names
    }


def tables_files(paths: str | Sequence[str]) -> dict[str, str]:
    """Table set name -> its JSON file, from folders and/or files.

    Args:
      paths: one path or several; a folder contributes every
        `qtables_<name>.json` in it (name `<name>`), a file itself (name:
        its file name without `qtables_` and `.json`).

    Returns:
      The files, in path order.

    Raises:
      FileNotFoundError: no paths, or a path without tables.
      ValueError: two table sets with the same name, or a reserved name.
    """
    if isinstance(paths, str):
        paths = (paths,)
    if not paths:
        raise FileNotFoundError("no tables given (--tables)")
    found: dict[str, str] = {}
    for path in paths:
        for name, file in _files_in(path).items():
            if name in found:
                raise ValueError(f"two table sets named {name!r} ({path})")
            if not name or name in (JPEG, candidates.ORIGINAL):
                raise ValueError(f"{file}: table set name {name!r} is reserved")
            found[name] = file
    return found


def load_tablesets(
    paths: str | Sequence[str],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (luma, chroma) of every table set of `tables_files(paths)`.

    Raises:
      FileNotFoundError: a path without tables.
      ValueError: duplicate or reserved names, or a file that is not a
        valid tables file (one line naming it, `tables.load_json`).
    """
    return {
        name: tables.load_json(file)
        for name, file in tables_files(paths).items()
    }


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


def _codecs(
    tablesets: dict[str, tuple[np.ndarray, np.ndarray]], config: Config
) -> list[candidates.Codec]:
    """Every curve's codec at every grid quality, curve by curve."""
    by_quality = {
        quality: curve_tables(
            tablesets, quality, config.diagnostics, config.diagnostic_quality
        )
        for quality in config.qualities
    }
    return [
        table_codec(
            curve, quality, *by_quality[quality][curve], config.subsampling
        )
        for curve in by_quality[config.qualities[0]]
        for quality in config.qualities
    ]


def check_config(config: Config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Refuses settings `run` cannot use, before any image or model is read.

    Args:
      config: the settings.

    Returns:
      The table sets of `config.tables` (`load_tablesets`).

    Raises:
      ValueError: one line naming the bad setting or tables file.
      FileNotFoundError: a tables path without tables.
    """
    config.model.check()
    checks.data(config.data)
    candidates.validate_qualities(config.qualities)
    codec.check_subsampling(config.subsampling)
    checks.integer("batch_size", config.batch_size, 1)
    checks.integer("shard_size", config.shard_size, 1)
    checks.integer("bootstrap", config.bootstrap, 0, note="0: no intervals")
    checks.integer("diagnostic_quality", config.diagnostic_quality, 1, 100)
    drops = [checks.number("gain_drops", d) for d in config.gain_drops]
    if not drops:
        raise ValueError("gain_drops is empty")
    if len(set(drops)) < len(drops):
        raise ValueError(f"gain_drops must be distinct numbers, got {drops}")
    tablesets = load_tablesets(config.tables)
    curve_tables(tablesets, 50, config.diagnostics)  # Unknown diagnostics.
    return tablesets


def run(
    config: Config, workdir: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Evaluates all curves, prints and writes the result and the plot.

    Writes `<workdir>/config.json`, `predictions.npz`, `errors.jsonl`,
    `rate_accuracy.json` and `rate_accuracy.png`.

    Args:
      config: what to evaluate.
      workdir: output directory (see `rundir.RunDir.open`).
      resume: continue an interrupted run in `workdir`: same settings, data,
        tables files and model files.
      verbose: progress bar and printed tables.

    Returns:
      The result dict, as written to `<workdir>/rate_accuracy.json`.

    Raises:
      ValueError: bad settings or tables files (before the model loads),
        or a workdir that cannot be resumed.
      FileNotFoundError: missing tables or images.
    """
    tablesets = check_config(config)
    table_files = tables_files(config.tables)
    data = config.data.resolved()
    config = dataclasses.replace(
        config,
        tables=(config.tables,)
        if isinstance(config.tables, str)
        else tuple(config.tables),
        data=data,
        qualities=tuple(int(q) for q in config.qualities),
    )
    source = data.load()
    with rundir.RunDir.open(
        workdir,
        JOB,
        config,
        resume,
        data=source.fingerprint,
        inputs=[*table_files.values(), *config.model.input_files()],
    ) as run_dir:
        predictions, skipped = evaluate.predict(
            config.model.load(),
            source,
            _codecs(tablesets, config),
            config.batch_size,
            run=run_dir,
            shard_size=config.shard_size,
            verbose=verbose,
        )
        run_dir.write_npz(evaluate.PREDICTIONS_FILE, predictions.to_arrays())
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
    return result


def _result(
    config: Config,
    predictions: evaluate.Predictions,
    source: datasets.Source,
    tablesets: dict[str, tuple[np.ndarray, np.ndarray]],
    num_errors: int,
) -> dict:
    curve_points = comparison.curves(predictions)
    original_top1 = curve_points[candidates.ORIGINAL][0]["top1"]
    gain_points = comparison.gains(
        curve_points, original_top1, config.gain_drops
    )
    if config.bootstrap:
        intervals = comparison.gain_intervals(
            predictions, config.gain_drops, config.bootstrap
        )
        for g in gain_points:
            g["interval"] = intervals[(g["curve"], g["drop"])]
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
            name: {"luma": luma.tolist(), "chroma": chroma.tolist()}
            for name, (luma, chroma) in tablesets.items()
        },
        "curves": curve_points,
        "diagnostic_curves": diagnostic_curves,
        "gains": gain_points,
        "bootstrap": config.bootstrap,
    }
