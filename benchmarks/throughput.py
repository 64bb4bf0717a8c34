"""Throughput and memory of the candidate evaluation, measured side by side.

Run on demand (`make bench`), never in CI's test run:

    python -m benchmarks.throughput --data=/path/to/imagenet-sample

Prints, in one process and one run:
  1. model-only: the model on candidate pixels already decoded, resized and
     held in memory (candidates/s, each candidate counts as one image);
  2. end-to-end: `evaluate.predict` on the real JPEG files, same model and
     batch size (candidates/s);
  3. the JPEG stage alone (decode the original, 10 encodes, 11 decodes and
     the model's resize per image) in tf.data, against the same work done
     with Pillow in a process pool of the same size (images/s);
  4. peak RSS of an evaluation subprocess at 100 and at 1000 images.
The last line is `ratio end_to_end/model_only = <x>`.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image

from compression_helps import candidates, datasets, evaluate, models

_DATA = flags.DEFINE_string(
    "data", "", "Folder of real JPEGs (default: the ImageNet sample images)."
)
_MODEL = flags.DEFINE_string("model", "efficientnet_lite0", "Registry model.")
_WEIGHTS = flags.DEFINE_string("weights", "imagenet", "Weights, or 'none'.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per model call.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 200, "Images timed.")
_WORKERS = flags.DEFINE_integer(
    "workers", os.cpu_count(), "Pillow process pool size (= host threads)."
)
_MEMORY = flags.DEFINE_bool("memory", True, "Measure peak RSS (slow).")


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _pillow_candidates(args):
    path, image_size, crop_fraction = args
    with open(path, "rb") as f:
        original = Image.open(io.BytesIO(f.read())).convert("RGB")
    decoded = [original]
    for quality in candidates.QUALITIES:
        buffer = io.BytesIO()
        original.save(buffer, "JPEG", quality=quality, optimize=True)
        decoded.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    for image in decoded:
        side = round(crop_fraction * min(image.size))
        left, top = (image.width - side) // 2, (image.height - side) // 2
        crop = image.crop((left, top, left + side, top + side))
        np.asarray(crop.resize((image_size, image_size), Image.BILINEAR))
    return len(decoded)


def _peak_rss_mib(folder: str, n: int, weights: str | None) -> float:
    """Peak RSS of a fresh evaluation process on the first n images."""
    workdir = tempfile.mkdtemp()
    # As a job evaluates: finished shards go to a run directory.
    code = (
        "import dataclasses, resource\n"
        "from compression_helps import datasets, evaluate, models, rundir\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Settings:\n"
        "    num_images: int\n"
        f"c = models.load_classifier({_MODEL.value!r}, {weights!r})\n"
        f"s = datasets.load({folder!r}, limit={n})\n"
        f"with rundir.RunDir.open({workdir!r}, 'benchmark', Settings({n}), "
        "data=s.fingerprint) as run:\n"
        f"    evaluate.predict(c, s, batch_size={_BATCH_SIZE.value}, "
        "run=run, verbose=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(f"evaluation subprocess failed:\n{out.stderr}")
    shutil.rmtree(workdir)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main(argv):
    del argv
    data = _DATA.value or datasets.sample_images_dir()
    weights = None if _WEIGHTS.value == "none" else _WEIGHTS.value
    classifier = models.load_classifier(_MODEL.value, weights)
    source = datasets.load(data, limit=_NUM_IMAGES.value)
    n = source.num_examples
    v = len(candidates.QUALITIES) + 1
    batch = _BATCH_SIZE.value
    print(
        f"{_MODEL.value}, {n} images x {v} candidates, batch {batch}, "
        f"{os.cpu_count()} CPUs, TF {tf.__version__}"
    )

    # 3. JPEG stage alone (also fills the in-memory tensors for 1.).
    batches = candidates.candidate_batches(
        source.dataset, classifier.resize, candidates.QUALITIES, batch
    )
    pixels, seconds = _timed(lambda: [b["pixels"] for b in batches])
    jpeg_tf = n / seconds
    paths = [p for p, _ in datasets.folder_examples(data)[:n]]
    spec = models.REGISTRY[_MODEL.value]()
    jobs = [(p, classifier.image_size, spec.crop_fraction) for p in paths]
    with concurrent.futures.ProcessPoolExecutor(_WORKERS.value) as pool:
        list(pool.map(_pillow_candidates, jobs[:4]))  # Warm up the pool.
        _, seconds = _timed(lambda: list(pool.map(_pillow_candidates, jobs)))
    jpeg_pillow = n / seconds

    # 1. Model only, on the same candidates held in memory.
    classify = evaluate.classify_fn(classifier, batch)
    labels = tf.zeros([batch], tf.int32)
    classify(pixels[0], labels[: len(pixels[0])])  # Trace and warm up.
    _, seconds = _timed(
        lambda: [classify(p, labels[: len(p)])[0].numpy() for p in pixels]
    )
    model_only = n * v / seconds

    # 2. End to end on the JPEG files.
    evaluate.predict(
        classifier,
        datasets.load(data, limit=batch),
        batch_size=batch,
        verbose=False,
    )  # Warm up.
    _, seconds = _timed(
        lambda: evaluate.predict(
            classifier, source, batch_size=batch, verbose=False
        )
    )
    end_to_end = n * v / seconds

    print(f"model_only: {model_only:.1f} candidates/s")
    print(f"end_to_end: {end_to_end:.1f} candidates/s")
    print(f"jpeg_stage tf.data: {jpeg_tf:.2f} images/s")
    print(
        f"jpeg_stage pillow pool({_WORKERS.value}): {jpeg_pillow:.2f} images/s"
    )
    print(f"ratio jpeg_stage tf.data/pillow = {jpeg_tf / jpeg_pillow:.2f}")

    if _MEMORY.value:
        # 1000 images from the folder, repeated under new names if needed.
        with tempfile.TemporaryDirectory() as folder:
            files = datasets.folder_examples(data)
            for i in range(1000):
                path, _ = files[i % len(files)]
                wnid = os.path.basename(path).split("_")[0]
                os.symlink(
                    os.path.abspath(path),  # --data may be relative.
                    os.path.join(folder, f"{wnid}_{i:04d}.JPEG"),
                )
            rss_100 = _peak_rss_mib(folder, 100, weights)
            rss_1000 = _peak_rss_mib(folder, 1000, weights)
        print(f"peak_rss 100 images: {rss_100:.0f} MiB")
        print(f"peak_rss 1000 images: {rss_1000:.0f} MiB")
        print(f"ratio peak_rss 1000/100 = {rss_1000 / rss_100:.3f}")
    print(f"ratio end_to_end/model_only = {end_to_end / model_only:.3f}")


if __name__ == "__main__":
    app.run(main)
