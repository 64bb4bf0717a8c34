"""What `compress` reports: the manifest, the summary and a histogram.

All in `<out>/.compress/`: `manifest.csv` and `manifest.jsonl` (one row per
written image: its output path, source id, original bytes, chosen
candidate and its bytes, top-1 class and probability on the original and
on the chosen file, and on the written file read back where verified),
`summary.json` with the printed summary line's numbers (images, skipped,
CR as SPEC.md defines it, bytes saved, top-1 agreement) and `chosen.png`,
how often each candidate was chosen.
"""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import tensorflow as tf

from compression_helps.compress import output_folder
from compression_helps.core import files, progress, rundir
from compression_helps.engine import candidates, evaluate, metrics, ranking
from compression_helps.models import registry

__all__ = [
    "HISTOGRAM_FILE",
    "MANIFEST_CSV",
    "MANIFEST_JSONL",
    "SUMMARY_FILE",
    "chosen_histogram_figure",
    "manifest",
    "summary_line",
    "verify",
    "write_reports",
]

MANIFEST_CSV = "manifest.csv"
MANIFEST_JSONL = "manifest.jsonl"
SUMMARY_FILE = "summary.json"
HISTOGRAM_FILE = "chosen.png"
_LISTED = 20  # Disagreeing files named in summary.json, at most.
_DIGITS = 6  # Of probabilities in the manifest.


def manifest(
    predictions: ranking.Predictions,
    chosen: np.ndarray,
    written: dict[str, np.ndarray],
    verified: dict[str, np.ndarray] | None,
) -> list[dict]:
    """One row per written image, in the order of the source.

    Args:
      predictions: the candidates' sizes and answers.
      chosen: `[N]` chosen candidate per image of `predictions`.
      written: `rows`, `names` and `tfrecords` of the written images.
      verified: `top1` and `probs` of the written files read back, or None.

    Returns:
      Dicts with `path` (relative to the output folder; in a TFRecord
      file, its `image/filename`), `tfrecord` (where there is one),
      `source`, `original_bytes`, `chosen`, `chosen_bytes`,
      `original_top1`, `original_prob`, `chosen_top1`, `chosen_prob` and,
      where verified, `verified_top1` and `verified_prob`.
    """
    p = predictions
    rows = []
    for k, row in enumerate(written["rows"].tolist()):
        choice = int(chosen[row])
        entry = {"path": str(written["names"][k])}
        if written["tfrecords"][k]:
            entry["tfrecord"] = str(written["tfrecords"][k])
        entry.update(
            source=str(p.ids[row]),
            original_bytes=int(p.sizes[row, 0]),
            chosen=str(p.names[choice]),
            chosen_bytes=int(p.sizes[row, choice]),
            original_top1=int(p.topk[row, 0, 0]),
            original_prob=round(float(p.topk_probs[row, 0, 0]), _DIGITS),
            chosen_top1=int(p.topk[row, choice, 0]),
            chosen_prob=round(float(p.topk_probs[row, choice, 0]), _DIGITS),
        )
        if verified is not None:
            entry["verified_top1"] = int(verified["top1"][k])
            entry["verified_prob"] = round(float(verified["probs"][k]), _DIGITS)
        rows.append(entry)
    return rows


def _summarize(
    predictions: ranking.Predictions,
    chosen: np.ndarray,
    written_rows: np.ndarray,
    rows: list[dict],
    errors_by_reason: dict[str, int],
    header: dict,
) -> dict:
    sizes = predictions.sizes[written_rows]  # [M, V]
    picks = chosen[written_rows]  # [M]
    original_bytes = int(sizes[:, 0].sum())
    written_bytes = int(metrics.chosen_values(sizes, picks).sum())
    kept = sum(r["chosen_top1"] == r["original_top1"] for r in rows)
    counts = np.bincount(picks, minlength=len(predictions.names))
    summary = {
        **header,
        "images": len(rows),
        "skipped": sum(errors_by_reason.values()),
        "skipped_by_reason": errors_by_reason,
        "original_bytes": original_bytes,
        "written_bytes": written_bytes,
        # SPEC.md: sum of originals / sum of chosen, over the images.
        "cr": metrics.compression_ratio(sizes, picks) if rows else None,
        "bytes_saved": original_bytes - written_bytes,
        "top1_kept": kept,
        "top1_agreement": 100.0 * kept / len(rows) if rows else None,
        "chosen": dict(
            zip(predictions.names.tolist(), counts.tolist(), strict=True)
        ),
        "verified": None,
    }
    if rows and "verified_top1" in rows[0]:
        same = [r["verified_top1"] == r["original_top1"] for r in rows]
        as_classified = [r["verified_top1"] == r["chosen_top1"] for r in rows]
        summary["verified"] = {
            "images": len(rows),
            "top1_agreement": 100.0 * sum(same) / len(rows),
            "as_classified": 100.0 * sum(as_classified) / len(rows),
            "disagreements": [
                r["path"] for r, s in zip(rows, same, strict=True) if not s
            ][:_LISTED],
        }
    return summary


def verify(
    run_dir: rundir.RunDir,
    output: output_folder.OutputFolder,
    written: dict[str, np.ndarray],
    classifier: registry.Classifier,
    batch_size: int,
    shard_size: int,
    verbose: bool = True,
) -> dict[str, np.ndarray]:
    """Classifies the written files, read back from disk, in a pass of its own.

    Each file takes the evaluation's path (`candidates.decode_image`,
    `candidates.model_pixels`, `evaluate.classify_fn`), shard by shard
    through `RunDir.map_shards`, so a killed run resumes.

    Args:
      run_dir: the run folder.
      output: where the files were written.
      written: `OutputFolder.write_chosen`'s result.
      classifier: the model.
      batch_size: images per model call.
      shard_size: images per shard.
      verbose: show a progress bar.

    Returns:
      `top1` `[M]` int32 class and `probs` `[M]` float32 its probability
      for each written file, in the order of `written`.
    """
    num_files = len(written["rows"])
    classify = evaluate.classify_fn(classifier, batch_size)

    def pixels(data):  # [1, S, S, 3] uint8: one candidate per image.
        image = candidates.decode_image(data)
        return candidates.model_pixels(image, classifier.resize)[None]

    def compute(start, stop, report):
        batches = (
            output.read_back(written, start, stop)
            .map(pixels, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        top1, probs = [np.zeros([0], np.int32)], [np.zeros([0], np.float32)]
        for batch in batches:
            count = int(batch.shape[0])
            _, topk, topk_probs = classify(batch, tf.zeros([count], tf.int32))
            top1.append(topk[:, 0, 0].numpy())
            probs.append(topk_probs[:, 0, 0].numpy())
            report(count)
        return {"top1": np.concatenate(top1), "probs": np.concatenate(probs)}

    bar = progress.Progress(num_files, "image", "verifying", verbose)
    with bar:
        parts = list(
            run_dir.map_shards("verified", num_files, shard_size, compute, bar)
        )
    return {k: np.concatenate([p[k] for p in parts]) for k in ("top1", "probs")}


def _size(n: int) -> str:
    """Bytes for people: kB below a megabyte, else MB (decimal units)."""
    return f"{n / 1e3:.1f} kB" if n < 1e6 else f"{n / 1e6:.1f} MB"


def summary_line(summary: dict) -> str:
    """The summary as printed: images, skipped, sizes, CR, agreement."""
    images = summary["images"]
    reasons = ", ".join(
        f"{n} {kind}" for kind, n in summary["skipped_by_reason"].items()
    )
    text = (
        f"{summary['model']}, {summary['selector']}: {images} images "
        f"written to {summary['out']}, {summary['skipped']} skipped"
        + (f" ({reasons})" if reasons else "")
    )
    if not images:
        return text
    text += (
        f"; {_size(summary['original_bytes'])} -> "
        f"{_size(summary['written_bytes'])}, CR "
        f"{summary['cr']:.2f} ({_size(summary['bytes_saved'])} saved); "
        f"top-1 kept on {summary['top1_kept']}/{images} "
        f"({summary['top1_agreement']:.2f}%)"
    )
    verified = summary["verified"]
    if verified:
        agree = round(verified["top1_agreement"] * images / 100)
        text += (
            f"\nverify: the written files, read back and classified again, "
            f"have the originals' top-1 on {agree}/{images} "
            f"({verified['top1_agreement']:.2f}%)"
        )
        if verified["disagreements"]:
            text += f"; not: {', '.join(verified['disagreements'][:5])}"
    return text


def chosen_histogram_figure(counts: dict[str, int], title: str):
    """How many images chose each candidate, in ladder order.

    Args:
      counts: candidate name -> images that chose it (the original first).
      title: plot title.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure  # No pyplot global state.

    names = list(counts)
    figure = Figure(figsize=(7, 1.2 + 0.22 * len(names)), layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(names))
    bars = ax.barh(positions, list(counts.values()), color="tab:blue")
    ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks(positions, names, fontsize=7)
    ax.invert_yaxis()  # The original on top, then the ladder in order.
    ax.set_xlabel("images")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return figure


def _csv_text(rows: list[dict]) -> str:
    table = io.StringIO(newline="")
    fields = list(rows[0]) if rows else ["path"]
    writer = csv.DictWriter(table, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return table.getvalue()


def write_reports(
    run_dir: rundir.RunDir,
    predictions: ranking.Predictions,
    chosen: np.ndarray,
    written: dict[str, np.ndarray],
    verified: dict[str, np.ndarray] | None,
    header: dict,
    verbose: bool = True,
) -> dict:
    """Writes the manifest, summary.json and chosen.png, atomically.

    Args:
      run_dir: the run folder (errors.jsonl already written).
      predictions: the candidates' sizes and answers.
      chosen: `[N]` chosen candidate per image.
      written: what `compress` wrote (see `manifest`).
      verified: the written files' answers, or None.
      header: the first fields of the summary: model, selector, output.
      verbose: print the summary line and where the reports are.

    Returns:
      The summary (as in summary.json).
    """
    rows = manifest(predictions, chosen, written, verified)
    errors_by_reason = rundir.count_errors(run_dir.root)
    summary = _summarize(
        predictions, chosen, written["rows"], rows, errors_by_reason, header
    )
    run_dir.write_text(MANIFEST_CSV, _csv_text(rows))
    run_dir.write_text(
        MANIFEST_JSONL, "".join(json.dumps(r) + "\n" for r in rows)
    )
    path = run_dir.write_json(SUMMARY_FILE, summary)
    title = (
        f"{summary['model']}, {summary['selector']}: {summary['images']} "
        "images"
        + (f", CR {summary['cr']:.2f}" if summary["cr"] is not None else "")
    )
    with files.atomic_path(run_dir.path(HISTOGRAM_FILE)) as tmp_path:
        chosen_histogram_figure(summary["chosen"], title).savefig(
            tmp_path, dpi=120
        )
    if verbose:
        print("\n" + summary_line(summary))
        manifest_path = os.path.join(run_dir.root, MANIFEST_CSV)
        print(f"manifest: {manifest_path}; summary: {path}")
    return summary
