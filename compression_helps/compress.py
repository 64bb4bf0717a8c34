"""Compress images for a model: the smallest file that keeps its answer.

Yang et al. 2021 (SPEC.md, "Selectors without the label") as a compression
method (SPEC.md, "Smallest file that keeps the answer"). For every image of a
folder (any image files, any depth, no labels needed) or a TFDS split, the
candidates are the original file and a ladder of JPEG re-encodings (`ladder`);
a label-free selector picks, from the model's answers alone, the smallest
candidate that keeps the answer it gives on the original; that candidate's
bytes are written to `--out` (`compress_output`: the input's tree of files, or
TFRecords).

The candidates are classified by the evaluation engine (`evaluate.predict`,
sharded and resumable in `<out>/.compress/`), so a ladder of QF 100..10
chooses exactly what run_selectors' `keep_top1` row does. The chosen
candidate is then encoded again by its codec from the same decoded pixels;
the encoders are deterministic, so these are the bytes that were
classified: every file's length is checked against the classified
candidate's, and `verify=True` classifies the written files again, in a
pass of their own, and compares their top-1 with the originals'.

Not from the paper: the default ladder (QF 100 down to 5 in steps of 5),
rungs with 4:4:4 chroma, with mozjpeg's trellis quantization or with
DeepN-JPEG table sets (`deepn_jpeg`), and the TFRecord output.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import tensorflow as tf

from compression_helps import (
    candidates,
    checks,
    compress_output,
    compress_report,
    datasets,
    evaluate,
    models,
    rundir,
    selectors,
)

__all__ = [
    "ENCODERS",
    "JOB",
    "QUALITIES",
    "SELECTORS",
    "SUBSAMPLINGS",
    "Config",
    "check_config",
    "ladder",
    "run",
    "select",
]

JOB = "compress"
QUALITIES = tuple(range(100, 0, -5))  # QF 100, 95, ..., 5.
ENCODERS = ("libjpeg", "mozjpeg")
SUBSAMPLINGS = ("4:2:0", "4:4:4", "4:2:2")
# The label-free selectors by the names of run_selectors' table rows.
SELECTORS = {
    "keep_top1": selectors.keep_top1,
    "keep_top5": selectors.keep_top5,
    "keep_both": selectors.keep_top1_and_top5,
}
_CONFIDENT = "confident_"  # confident_<t>: `selectors.confident`.
# Settings that change no result: a resumed run may change them.
RESUMABLE_CHANGES = ("verify",)


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` compresses, and how; the flags of compress.py mirror it.

    Attributes:
      model: the classifier whose answers the files keep.
      data: the images: a folder (any image files, any depth; no labels
        needed) or `tfds:<name>[:<split>]`.
      qualities: JPEG quality factors of the ladder, for every encoder,
        subsampling and table set.
      encoders: JPEG encoders of the ladder: libjpeg (standard tables
        through TensorFlow, as the evaluation's candidates), mozjpeg
        (trellis quantization: smaller files from the same tables).
      subsamplings: chroma subsamplings of the ladder (4:2:0, 4:4:4, 4:2:2).
      tables: DeepN-JPEG table sets for more rungs, each scaled to every
        quality: design_qtable.py / fit_qtable.py workdirs, tables files or
        names of the sets shipped with deepn_jpeg.
      selector: keep_top1 (the original's top-1 class), keep_top5 (its
        top-5 set), keep_both, or confident_<t> (keep_top1 with a top-1
        probability of at least t).
      format: folder (the input's tree of files) or tfrecord (one file of
        tf.train.Examples per shard, with the label where there is one).
      verify: classify the written files again, in a pass of their own, and
        report their top-1 agreement with the originals.
      batch_size: images per model call.
      shard_size: images per shard (the unit of resuming; of TFRecord
        files too).
    """

    model: models.ModelConfig = models.ModelConfig()
    data: datasets.DataConfig = datasets.DataConfig()
    qualities: tuple[int, ...] = QUALITIES
    encoders: tuple[str, ...] = ("libjpeg",)
    subsamplings: tuple[str, ...] = ("4:2:0",)
    tables: tuple[str, ...] = ()
    selector: str = "keep_top1"
    format: str = "folder"
    verify: bool = False
    batch_size: int = 8
    shard_size: int = evaluate.SHARD_SIZE


def _threshold(selector: str) -> float:
    text = selector.removeprefix(_CONFIDENT)
    try:
        value = float(text)
    except ValueError:
        value = None
    return checks.number(f"selector {selector}: threshold", value, 0.0, 1.0)


def check_config(config: Config) -> tuple[candidates.Codec, ...]:
    """Refuses settings `run` cannot use, before any image or model is read.

    Args:
      config: the settings.

    Returns:
      The ladder (`ladder`).

    Raises:
      ValueError: one line naming the bad setting or tables file.
      FileNotFoundError: a tables path without tables.
    """
    config.model.check()
    checks.data(config.data)
    candidates.validate_qualities(config.qualities)
    checks.choices_of("encoders", config.encoders, ENCODERS)
    checks.choices_of("subsamplings", config.subsamplings, SUBSAMPLINGS)
    if config.selector.startswith(_CONFIDENT):
        _threshold(config.selector)
    else:
        choices = (*SELECTORS, f"{_CONFIDENT}<t>")
        checks.one_of("selector", config.selector, choices)
    checks.one_of("format", config.format, compress_output.FORMATS)
    checks.integer("batch_size", config.batch_size, 1)
    checks.integer("shard_size", config.shard_size, 1)
    return ladder(config)


def _curve(base: str, encoder: str, subsampling: str) -> str:
    """A rung's curve name, e.g. `jpeg-444@mozjpeg`.

    `jpeg` (standard tables) or a table set's name; then the subsampling and
    the encoder where they are not the evaluation's, the encoder as
    `deepn_jpeg.rate_accuracy` names it (`jpeg@mozjpeg`).
    """
    if subsampling != SUBSAMPLINGS[0]:
        base += "-" + subsampling.replace(":", "")
    if encoder != ENCODERS[0]:
        from deepn_jpeg import tableset_files  # As in `_load_tablesets`.

        base += f"{tableset_files.ENCODER_MARK}{encoder}"
    return base


def ladder(config: Config) -> tuple[candidates.Codec, ...]:
    """The candidates after the original: every quality of every curve.

    One curve per table set (standard JPEG first), encoder and subsampling,
    each at every quality. Standard tables with libjpeg at 4:2:0 are the
    evaluation's own candidates (`candidates.jpeg_codec`, named `qf<q>`); at
    4:4:4 the same TensorFlow encoder without chroma downsampling.
    Everything else is DeepN-JPEG's codec (`rate_accuracy.table_codec`),
    whose files carry exactly the tables asked for.

    Args:
      config: `qualities`, `encoders`, `subsamplings` and `tables` are used.

    Returns:
      The codecs, in curve order.

    Raises:
      ValueError: a bad tables file, or two candidates with one name.
    """
    qualities = candidates.validate_qualities(config.qualities)
    tablesets = _load_tablesets(config.tables)
    codecs = []
    for base in (candidates.JPEG, *tablesets):
        for encoder in config.encoders:
            for subsampling in config.subsamplings:
                curve = _curve(base, encoder, subsampling)
                codecs += [
                    _codec(curve, q, base, tablesets, encoder, subsampling)
                    for q in qualities
                ]
    return candidates.as_codecs(codecs)


def _load_tablesets(paths: tuple[str, ...]) -> dict:
    if not paths:
        return {}
    # Paper 2's code only for rungs that need it: the default ladder does
    # not depend on the deepn_jpeg package.
    from deepn_jpeg import rate_accuracy

    return rate_accuracy.load_tablesets(paths)


def _codec(
    curve: str,
    quality: int,
    base: str,
    tablesets: dict,
    encoder: str,
    subsampling: str,
) -> candidates.Codec:
    """One rung: the tables of `base` at `quality`, encoded as asked."""
    if base == candidates.JPEG and encoder == ENCODERS[0]:
        if subsampling == "4:2:0":
            return candidates.jpeg_codec(quality)
        if subsampling == "4:4:4":
            encode = functools.partial(
                tf.io.encode_jpeg,
                quality=quality,
                optimize_size=True,
                chroma_downsampling=False,
            )
            return candidates.Codec(curve, quality, encode)
    from deepn_jpeg import rate_accuracy  # As in `_load_tablesets`.

    luma, chroma = rate_accuracy.curve_tables(tablesets, quality)[base]
    return rate_accuracy.table_codec(
        curve, quality, luma, chroma, subsampling, encoder
    )


def select(predictions: evaluate.Predictions, selector: str) -> np.ndarray:
    """The chosen candidate of every image, without labels.

    Args:
      predictions: the candidates' sizes and top-5 answers.
      selector: a `SELECTORS` name or `confident_<t>`.

    Returns:
      `[N]` int chosen candidate indices (0: the original).
    """
    p = predictions
    if selector.startswith(_CONFIDENT):
        return selectors.confident(
            p.topk, p.topk_probs, p.sizes, _threshold(selector)
        )
    return SELECTORS[selector](p.topk, p.sizes)


def run(
    config: Config, out: str, resume: bool = False, verbose: bool = True
) -> dict:
    """Compresses every image and writes the chosen files to `out`.

    Writes the files (`compress_output`) and, in `<out>/.compress/`,
    `manifest.csv`, `manifest.jsonl`, `summary.json`, `chosen.png` and
    `errors.jsonl` (one line per skipped image: id, path, reason).

    Args:
      config: what to compress, and how.
      out: the output folder: new, empty, or an earlier run's; never
        inside the input folder.
      resume: continue an interrupted run in `out` (same settings, data).
      verbose: progress bars and the summary line.

    Returns:
      The summary (as in summary.json).

    Raises:
      ValueError: bad settings, an `out` that is refused, or no image that
        could be compressed (one line).
    """
    codecs = check_config(config)
    data = config.data.resolved()
    source = data.load()
    compress_output.check_places(out, source.root)
    compress_output.OutputFolder.check(out)
    config = dataclasses.replace(config, data=data)
    state = os.path.join(out, compress_output.STATE_DIR)
    fresh = not resume or not os.path.exists(
        os.path.join(state, rundir.CONFIG_FILE)
    )
    with rundir.RunDir.open(
        state,
        JOB,
        config,
        resume,
        data=source.fingerprint,
        inputs=[*config.model.input_files(), *config.tables],
        may_change=RESUMABLE_CHANGES,
    ) as run_dir:
        output = compress_output.OutputFolder(out, config.format)
        if fresh:  # No other run's files stay next to this one's.
            output.remove_all()
        classifier = config.model.load()
        predictions, skipped = evaluate.predict(
            classifier,
            source,
            codecs,
            config.batch_size,
            run=run_dir,
            shard_size=config.shard_size,
            verbose=verbose,
            require_label=False,
        )
        chosen = select(predictions, config.selector)
        written = output.write_chosen(
            run_dir,
            source,
            predictions,
            chosen,
            codecs,
            config.shard_size,
            verbose,
        )
        skipped += rundir.SkippedImage.from_array(written.pop("skipped"))
        verified = None
        if config.verify:
            verified = compress_report.verify(
                run_dir,
                output,
                written,
                classifier,
                config.batch_size,
                config.shard_size,
                verbose,
            )
        run_dir.write_errors(skipped)
        return compress_report.write_reports(
            run_dir,
            predictions,
            chosen,
            written,
            verified,
            {
                "model": classifier.name,
                "selector": config.selector,
                "format": config.format,
                "out": out,
            },
            verbose,
        )
