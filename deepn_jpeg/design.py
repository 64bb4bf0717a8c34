"""Designs DeepN-JPEG quantization tables from a data set (FCA + PLM).

Zihao Liu, Tao Liu, Wujie Wen, Lei Jiang, Jie Xu, Yanzhi Wang, Gang Quan.
"DeepN-JPEG: A Deep Neural Network Favorable JPEG-based Image Compression
Framework." DAC 2018. https://arxiv.org/abs/1803.05788

`run` is the job of `experiments/design_qtable.py`: band statistics of the
images (Sec. 3.2, `deepn_jpeg.statistics`), then one luma and one chroma
table per PLM variant (Sec. 3.3, `deepn_jpeg.tables.plm`), written as JSON
and `cjpeg -qtables` files with a heat-map next to standard JPEG at QF 50.
The rate-accuracy evaluation of the tables is not part of this job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import keras
import numpy as np

from compression_helps import candidates, datasets, evaluate
from compression_helps import workdir as workdir_lib
from deepn_jpeg import statistics, tables

__all__ = [
    "CONFIG_FILE",
    "PLOT_FILE",
    "STATISTICS_FILE",
    "SUMMARY_FILE",
    "Config",
    "Result",
    "design_tables",
    "plot",
    "qtables_path",
    "run",
    "summary_text",
]

CONFIG_FILE = workdir_lib.CONFIG_FILE
STATISTICS_FILE = "statistics.json"
SUMMARY_FILE = "summary.txt"
PLOT_FILE = "design.png"


@dataclasses.dataclass(frozen=True)
class Config:
    """What `run` computes; the flags of design_qtable.py mirror it.

    Attributes:
      data: image folder or `tfds:<name>[:<split>]` (`datasets.load`).
      per_class: at most this many images per label (unlabelled images are
        all kept); None: all.
      limit: only the first `limit` images of the source.
      tfds_data_dir: TFDS data dir for `tfds:` sources.
      split: which images of those (`datasets.split`): "all", or the "fit"
        half, keeping the "heldout" half for evaluating the tables.
      split_seed: seed of the split.
      variants: PLM variants, from `tables.PLM_VARIANTS`.
      plm: PLM parameters (the "monotone" variant derives its own c).
      seed: sampling seed.
      chroma_subsampling: chroma resolution analysed, "4:4:4" or "4:2:0".
      reference_quality: QF of the standard JPEG tables shown for comparison.
      shard_size: images per partial-statistics shard (the unit of resuming).
    """

    data: str
    per_class: int | None = 10
    limit: int | None = None
    tfds_data_dir: str | None = None
    split: str = "all"
    split_seed: int = 0
    variants: tuple[str, ...] = tables.PLM_VARIANTS
    plm: tables.PlmParams = tables.PAPER_PARAMS
    seed: int = 0
    chroma_subsampling: str = "4:4:4"
    reference_quality: int = 50
    shard_size: int = 256


@dataclasses.dataclass(frozen=True)
class Result:
    """What `run` produced.

    Attributes:
      statistics: the band statistics.
      qtables: variant -> `(luma, chroma)`, `[8, 8]` int32 each.
      summary: the text of `summary_text`.
    """

    statistics: statistics.BandStatistics
    qtables: dict[str, tuple[np.ndarray, np.ndarray]]
    summary: str


def qtables_path(workdir: str, variant: str, extension: str) -> str:
    """Where `run` writes a variant's tables.

    Args:
      workdir: the output directory.
      variant: PLM variant (or another table set's name, e.g. a fitted
        one of `fit`).
      extension: "json" or "txt" (`cjpeg -qtables`).

    Returns:
      `<workdir>/qtables_<variant>.<extension>`.
    """
    return os.path.join(workdir, f"qtables_{variant}.{extension}")


def design_tables(
    stats: statistics.BandStatistics,
    variant: str = "paper",
    params: tables.PlmParams = tables.PAPER_PARAMS,
) -> tuple[np.ndarray, np.ndarray]:
    """DeepN-JPEG, Sec. 3.3: luma table from Y, chroma from pooled Cb/Cr.

    Args:
      stats: band statistics.
      variant: "paper" or "monotone" (see `tables.plm`).
      params: PLM parameters; "monotone" ignores `params.c`.

    Returns:
      `(luma, chroma)`, `[8, 8]` int32 each.
    """
    kwargs = dataclasses.asdict(params)
    if variant == "monotone":
        del kwargs["c"]
    return (
        tables.plm(stats.std("luma"), variant, **kwargs),
        tables.plm(stats.std("chroma"), variant, **kwargs),
    )


def summary_text(
    stats: statistics.BandStatistics,
    qtables: dict[str, tuple[np.ndarray, np.ndarray]],
    reference_quality: int = 50,
) -> str:
    """The std and tables as 8x8 grids, for printing.

    Args:
      stats: band statistics.
      qtables: variant -> `(luma, chroma)`.
      reference_quality: QF of the standard tables shown last.

    Returns:
      The text.
    """
    lines = [
        f"{stats.num_images} images, {stats.count('luma')} luma and "
        f"{stats.count('chroma')} chroma 8x8 blocks "
        f"(chroma {stats.chroma_subsampling})"
    ]
    sections = [
        ("luma std", stats.std("luma"), "{:7.2f}"),
        ("chroma std (Cb, Cr pooled)", stats.std("chroma"), "{:7.2f}"),
    ]
    for variant, (luma, chroma) in qtables.items():
        sections.append((f"luma table, PLM {variant}", luma, "{:4d}"))
        sections.append((f"chroma table, PLM {variant}", chroma, "{:4d}"))
    luma, chroma = tables.standard_qtables(reference_quality)
    sections.append((f"JPEG luma table, QF {reference_quality}", luma, "{:4d}"))
    sections.append(
        (f"JPEG chroma table, QF {reference_quality}", chroma, "{:4d}")
    )
    for title, grid, fmt in sections:
        lines += ["", f"{title}:", tables.format_qtable(grid, fmt)]
    return "\n".join(lines)


def plot(
    path: str,
    stats: statistics.BandStatistics,
    qtables: dict[str, tuple[np.ndarray, np.ndarray]],
    reference_quality: int = 50,
) -> None:
    """Heat-maps of the luma/chroma std and of the tables vs standard JPEG.

    Rows: std; one row per PLM variant; standard JPEG at `reference_quality`.
    Columns: luma, chroma. Each cell shows its value.

    Args:
      path: output PNG.
      stats: band statistics.
      qtables: variant -> `(luma, chroma)`.
      reference_quality: QF of the standard tables.
    """
    # The object-oriented API: no pyplot global state, Agg from the suffix.
    from matplotlib import colors
    from matplotlib.figure import Figure

    rows = [
        ("std", (stats.std("luma"), stats.std("chroma")), "{:.0f}"),
        *(
            (f"PLM {variant}", pair, "{:d}")
            for variant, pair in qtables.items()
        ),
        (
            f"JPEG QF {reference_quality}",
            tables.standard_qtables(reference_quality),
            "{:d}",
        ),
    ]
    figure = Figure(figsize=(7.5, 3.4 * len(rows)))
    axes = figure.subplots(len(rows), 2, squeeze=False)
    for (title, pair, fmt), row_axes in zip(rows, axes, strict=True):
        for name, grid, ax in zip(
            ("luma", "chroma"), pair, row_axes, strict=True
        ):
            grid = np.asarray(grid)
            if title == "std":  # The DC band dwarfs the rest: log scale.
                norm = colors.LogNorm(max(grid.min(), 1e-3), grid.max())
            else:
                norm = colors.Normalize(0, 255)
            image = ax.imshow(grid, cmap="viridis", norm=norm)
            figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            ax.set_title(f"{name} {title}")
            ax.set_xticks(range(8))
            ax.set_yticks(range(8))
            ax.set_xlabel("horizontal frequency v")
            ax.set_ylabel("vertical frequency u")
            for (u, v), value in np.ndenumerate(grid):
                ax.text(
                    v,
                    u,
                    fmt.format(value.item()),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if norm(value) > 0.5 else "white",
                )
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _shard_statistics(
    source: datasets.Source, indices: np.ndarray, chroma_subsampling: str
) -> tuple[statistics.BandStatistics, list[evaluate.SkippedImage]]:
    """Statistics of some images; bad images are skipped and recorded."""
    stats = statistics.compute(
        source.select(indices), chroma_subsampling, ignore_errors=True
    )
    skipped = []
    if stats.num_images < len(indices):

        def work(example):
            image = candidates.decode_image(example["image_bytes"])
            return statistics.image_sums(image, chroma_subsampling)

        for index in indices:
            record = evaluate.diagnose(source, int(index), work, False)
            if record is not None:
                skipped.append(record)
    return stats, skipped


def _write_shard(path: str, stats, skipped) -> None:
    text = json.dumps(
        {
            "statistics": json.loads(stats.to_json()),
            "skipped": [dataclasses.asdict(s) for s in skipped],
        }
    )
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _read_shard(path: str):
    with open(path) as f:
        data = json.load(f)
    stats = statistics.BandStatistics.from_json(json.dumps(data["statistics"]))
    return stats, [evaluate.SkippedImage(**s) for s in data["skipped"]]


def run(config: Config, workdir: str, resume: bool = False) -> Result:
    """Computes statistics and tables; writes them to `workdir`.

    Writes `config.json`, `statistics.json`, `qtables_<variant>.json` and
    `.txt` (`cjpeg -qtables`) for each variant, `summary.txt`, `design.png`
    and `errors.jsonl` (images that could not be decoded, skipped). Partial
    statistics of each shard of images are kept in `<workdir>/shards/`;
    `resume` reuses them after an interruption.

    Args:
      config: what to compute.
      workdir: output directory (created).
      resume: continue an interrupted run in `workdir` (same config).

    Returns:
      The statistics, tables and summary text.

    Raises:
      ValueError: unknown variant, or no images with whole 8x8 blocks.
    """
    for variant in config.variants:
        if variant not in tables.PLM_VARIANTS:
            raise ValueError(
                f"variant must be in {tables.PLM_VARIANTS}, got {variant!r}"
            )
    workdir_lib.prepare(workdir)
    workdir_lib.write_config(workdir, config, resume)
    source = datasets.split(
        datasets.load(config.data, config.limit, config.tfds_data_dir),
        config.split,
        config.split_seed,
    )
    labels = source.labels()
    chosen = (
        statistics.select_per_class(labels, config.per_class, config.seed)
        if config.per_class
        else np.arange(len(labels))
    )
    shard_dir = os.path.join(workdir, "shards")
    if not resume:
        shutil.rmtree(shard_dir, ignore_errors=True)
    os.makedirs(shard_dir, exist_ok=True)
    stats = statistics.BandStatistics.empty(config.chroma_subsampling)
    skipped = []
    progress = keras.utils.Progbar(len(chosen), unit_name="image")
    for start in range(0, len(chosen), config.shard_size):
        indices = chosen[start : start + config.shard_size]
        path = os.path.join(shard_dir, f"statistics-{start:09d}.json")
        if os.path.exists(path):
            part, part_skipped = _read_shard(path)
        else:
            part, part_skipped = _shard_statistics(
                source, indices, config.chroma_subsampling
            )
            _write_shard(path, part, part_skipped)
        stats = stats.merge(part)
        skipped.extend(part_skipped)
        progress.add(len(indices))
    workdir_lib.write_errors(workdir, skipped)
    if not stats.count("luma") or not stats.count("chroma"):
        raise ValueError(f"{config.data}: no image has a whole 8x8 block")
    stats.save(os.path.join(workdir, STATISTICS_FILE))

    qtables = {}
    for variant in config.variants:
        luma, chroma = design_tables(stats, variant, config.plm)
        qtables[variant] = (luma, chroma)
        params: dict[str, Any] = dataclasses.asdict(config.plm)
        if variant == "monotone":
            params["c"] = tables.monotone_c(config.plm)
        metadata = {
            "variant": variant,
            "plm": params,
            "num_images": stats.num_images,
            "data": config.data,
        }
        tables.save_json(
            qtables_path(workdir, variant, "json"), luma, chroma, metadata
        )
        tables.write_cjpeg_qtables(
            qtables_path(workdir, variant, "txt"),
            [luma, chroma],
            comment=(
                f"DeepN-JPEG tables (PLM {variant}) from {stats.num_images} "
                f"images of {config.data}\nslot 0: luma, slot 1: chroma; "
                "natural order; cjpeg -qtables FILE -qslots 0,1 (no -quality)"
            ),
        )
    summary = summary_text(stats, qtables, config.reference_quality)
    if skipped:
        summary += (
            f"\n\n{len(skipped)} images skipped (see "
            f"{os.path.join(workdir, workdir_lib.ERRORS_FILE)})"
        )
    with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
        f.write(summary + "\n")
    plot(
        os.path.join(workdir, PLOT_FILE),
        stats,
        qtables,
        config.reference_quality,
    )
    return Result(stats, qtables, summary)
