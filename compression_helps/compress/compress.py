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
import os

import numpy as np

from compression_helps.compress import output_folder, report
from compression_helps.core import checks, rundir
from compression_helps.engine import candidates, evaluate, ranking
from compression_helps.models import registry
from compression_helps.selection import selectors
from compression_helps.sources import datasets
from deepn_jpeg.jpeg import codec, ladder, tableset_files

__all__ = [
    "JOB",
    "QUALITIES",
    "SELECTORS",
    "Config",
    "check_config",
    "ladder_of",
    "run",
    "select",
]

JOB = "compress"
QUALITIES = tuple(range(100, 0, -5))  # QF 100, 95, ..., 5.
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

    model: registry.ModelConfig = registry.ModelConfig()
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
      The ladder (`ladder_of`).

    Raises:
      ValueError: one line naming the bad setting or tables file.
      FileNotFoundError: a tables path without tables.
    """
    config.model.check()
    config.data.check()
    candidates.validate_qualities(config.qualities)
    checks.choices_of("encoders", config.encoders, codec.ENCODERS)
    checks.choices_of("subsamplings", config.subsamplings, codec.SUBSAMPLINGS)
    if config.selector.startswith(_CONFIDENT):
        _threshold(config.selector)
    else:
        choices = (*SELECTORS, f"{_CONFIDENT}<t>")
        checks.one_of("selector", config.selector, choices)
    checks.one_of("format", config.format, output_folder.FORMATS)
    checks.integer("batch_size", config.batch_size, 1)
    checks.integer("shard_size", config.shard_size, 1)
    return ladder_of(config)


def ladder_of(config: Config) -> tuple[candidates.Codec, ...]:
    """The candidates after the original: every quality of every curve.

    One curve per table set (standard JPEG first), encoder and subsampling
    (`ladder.curves`: a set that fixes its encoder or subsampling only
    with those), each at every quality (`ladder.codecs`). Standard tables
    with libjpeg at 4:2:0 are the evaluation's own candidates (named
    `qf<q>`), so a ladder of QF 100..10 chooses what run_selectors'
    `keep_top1` does.

    Args:
      config: `qualities`, `encoders`, `subsamplings` and `tables` are used.

    Returns:
      The codecs, in curve order.

    Raises:
      ValueError: a bad tables file, or two candidates with one name.
      FileNotFoundError: a tables path without tables.
    """
    qualities = candidates.validate_qualities(config.qualities)
    tablesets = tableset_files.load_sets(config.tables) if config.tables else {}
    curves = ladder.curves(tablesets, config.encoders, config.subsamplings)
    return ladder.codecs(
        curves,
        qualities,
        ladder.scaled_tables(tablesets),
        codec.DEFAULT_SUBSAMPLING,
    )


def select(predictions: ranking.Predictions, selector: str) -> np.ndarray:
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
    output_folder.check_places(out, source.root)
    output_folder.OutputFolder.check(out)
    config = dataclasses.replace(config, data=data)
    state = os.path.join(out, output_folder.STATE_DIR)
    fresh = not resume or not os.path.exists(
        os.path.join(state, rundir.CONFIG_FILE)
    )
    with rundir.RunDir.open(
        state,
        JOB,
        config,
        resume,
        data=source.fingerprint,
        inputs=[
            *config.model.input_files(),
            *(
                tableset_files.tables_files(config.tables).values()
                if config.tables
                else ()
            ),
        ],
        may_change=RESUMABLE_CHANGES,
    ) as run_dir:
        output = output_folder.OutputFolder(out, config.format)
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
            verified = report.verify(
                run_dir,
                output,
                written,
                classifier,
                config.batch_size,
                config.shard_size,
                verbose,
            )
        run_dir.write_errors(skipped)
        return report.write_reports(
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
