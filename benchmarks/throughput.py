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
  4. two models in one pass (`evaluate.predict_models`: --model and
     --second_model on one JPEG stage) against a `predict` run of each:
     wall and CPU time, and whether their predictions are equal (they must
     be);
  5. the JPEG stage reading a candidate store (`candidate_store`: decodes
     and resizes only) against encoding live (images/s), and the time to
     fill the store;
  6. the JPEG stage per host thread: tf.data limited to 1 and to 2 threads
     (`threading.private_threadpool_size`, one thread per op), live and
     from the store, and the host cores needed to feed an accelerator that
     classifies --target_candidates_per_s candidates per second: the target
     over the candidates/s per thread, and over the candidates per
     CPU-second (which other processes on the cores do not change);
  7. peak RSS of an evaluation subprocess at 100 and at 1000 images.
The last line is `ratio end_to_end/model_only = <x>`.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
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

from compression_helps.engine import candidate_store, candidates, evaluate
from compression_helps.models import registry
from compression_helps.sources import datasets, folders

_DATA = flags.DEFINE_string(
    "data", "", "Folder of real JPEGs (default: the ImageNet sample images)."
)
_MODEL = flags.DEFINE_string("model", "efficientnet_lite0", "Registry model.")
_WEIGHTS = flags.DEFINE_string("weights", "imagenet", "Weights, or 'none'.")
_SECOND_MODEL = flags.DEFINE_string(
    "second_model",
    "efficientnet_lite2",
    "Registry model evaluated with --model in one pass (its own input size).",
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per model call.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 200, "Images timed.")
_WORKERS = flags.DEFINE_integer(
    "workers", os.cpu_count(), "Pillow process pool size (= host threads)."
)
_TARGET = flags.DEFINE_float(
    "target_candidates_per_s",
    10000.0,
    "Candidates per second the accelerator classifies: the host cores "
    "needed to feed it are estimated from the per-thread JPEG stage.",
)
_MEMORY = flags.DEFINE_bool("memory", True, "Measure peak RSS (slow).")
_THREADS = (1, 2)  # Host threads of the per-thread JPEG stage.


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _timed_with_cpu(fn):
    """`_timed`, and the CPU seconds of all this process' threads.

    CPU time is the work done, also when other processes share the cores
    (wall time then depends on them).
    """
    cpu_start = time.process_time()
    result, seconds = _timed(fn)
    return result, seconds, time.process_time() - cpu_start


def _images_per_s(
    batches: tf.data.Dataset, threads: int | None = None
) -> tuple[float, float]:
    """Images per second and per CPU-second of a candidate pipeline.

    Timed from its first batch on (tracing and filling the buffers are
    not). Per CPU-second counts the work of this process' threads only, so
    it does not depend on other processes sharing the cores. `threads`:
    run the whole pipeline on that many host threads, one per op.
    """
    if threads is not None:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        batches = batches.with_options(options)
    iterator = iter(batches)
    next(iterator)
    count = 0

    def drain():
        nonlocal count
        for batch in iterator:
            count += int(batch["label"].shape[0])

    _, seconds, cpu_seconds = _timed_with_cpu(drain)
    return count / seconds, count / cpu_seconds


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
        "from compression_helps.core import rundir\n"
        "from compression_helps.engine import evaluate\n"
        "from compression_helps.models import registry\n"
        "from compression_helps.sources import datasets\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Settings:\n"
        "    num_images: int\n"
        f"c = registry.load_classifier({_MODEL.value!r}, {weights!r})\n"
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


def _two_models(classifiers, source, warm_up_source, batch) -> None:
    """4. Two models on one JPEG stage against a run of each."""
    kwargs = dict(batch_size=batch, verbose=False)
    # Both ways once on a few images: kernels are picked on first use.
    evaluate.predict_models(classifiers, warm_up_source, **kwargs)
    for classifier in classifiers:
        evaluate.predict(classifier, warm_up_source, **kwargs)
    (together, _), wall_together, cpu_together = _timed_with_cpu(
        lambda: evaluate.predict_models(classifiers, source, **kwargs)
    )
    alone, wall_alone, cpu_alone = [], 0.0, 0.0
    for classifier in classifiers:
        (predictions, _), wall, cpu = _timed_with_cpu(
            lambda c=classifier: evaluate.predict(c, source, **kwargs)
        )
        alone.append(predictions)
        wall_alone += wall
        cpu_alone += cpu
    equal = all(
        np.array_equal(getattr(a, name), getattr(b, name))
        for a, b in zip(together, alone, strict=True)
        for name in a.to_arrays()
    )
    names = " + ".join(c.name for c in classifiers)
    print(
        f"two_models one_pass ({names}): {wall_together:.1f} s wall, "
        f"{cpu_together:.1f} s CPU"
    )
    print(
        f"two_models separate runs: {wall_alone:.1f} s wall, "
        f"{cpu_alone:.1f} s CPU"
    )
    print(f"two_models predictions equal: {equal}")
    print(
        "ratio two_models one_pass/separate = "
        f"{wall_together / wall_alone:.3f} wall, "
        f"{cpu_together / cpu_alone:.3f} CPU"
    )
    if not equal:
        raise AssertionError("one pass and separate runs predict differently")


def _store_and_threads(classifier, source, data_config, batch) -> None:
    """5. Store against live encoding; 6. per-thread rates, cores needed."""
    codecs = candidates.as_codecs(candidates.QUALITIES)
    v = len(codecs) + 1

    def live():
        return candidates.candidate_batches(
            source.dataset.filter(datasets.usable),
            classifier.resize,
            codecs,
            batch,
        )

    with tempfile.TemporaryDirectory() as root:
        key = candidate_store.store_key(codecs, data_config, source)
        store = candidate_store.Store.open(root, key, source.count())
        _, seconds = _timed(lambda: store.fill(source, codecs, verbose=False))
        fill = source.count() / seconds

        def stored():
            return candidates.stored_candidate_batches(
                store.read().filter(datasets.usable), classifier.resize, batch
            )

        rates = {
            "live": _images_per_s(live()),
            "store": _images_per_s(stored()),
        }
        per_thread = {
            (kind, threads): _images_per_s(make(), threads)
            for kind, make in (("live", live), ("store", stored))
            for threads in _THREADS
        }
    print(f"candidate_store fill (encode and write): {fill:.2f} images/s")
    for kind, (rate, per_cpu_s) in rates.items():
        print(
            f"jpeg_stage {kind}: {rate:.2f} images/s "
            f"({per_cpu_s:.2f} images per CPU-second)"
        )
    (live_rate, live_cpu), (store_rate, store_cpu) = rates.values()
    print(
        f"ratio jpeg_stage store/live = {store_rate / live_rate:.2f} "
        f"images/s, {store_cpu / live_cpu:.2f} per CPU-second"
    )
    for (kind, threads), (rate, per_cpu_s) in per_thread.items():
        print(
            f"jpeg_stage {kind} {threads} thread(s): {rate:.2f} images/s = "
            f"{rate / threads:.2f} images/s per thread = "
            f"{rate * v / threads:.1f} candidates/s per thread "
            f"({per_cpu_s * v:.1f} candidates per CPU-second)"
        )
    most = max(_THREADS)
    target = _TARGET.value
    for kind in ("live", "store"):
        rate, per_cpu_s = per_thread[kind, most]
        scaling = rate / per_thread[kind, 1][0]
        print(f"ratio jpeg_stage {kind} {most}/1 threads = {scaling:.2f}")
        # Per thread with the most threads: it includes their contention.
        per_thread_rate = rate * v / most
        cores = target / per_thread_rate
        print(
            f"host cores to feed {target:.0f} candidates/s ({kind}): "
            f"{target:.0f} / {per_thread_rate:.1f} candidates/s per thread "
            f"= {cores:.1f} -> {math.ceil(cores)} cores"
        )
        # The same from CPU time: right also where other work shares cores.
        cores = target / (per_cpu_s * v)
        print(
            f"host cores to feed {target:.0f} candidates/s ({kind}, by CPU "
            f"time): {target:.0f} / {per_cpu_s * v:.1f} candidates per "
            f"CPU-second = {cores:.1f} -> {math.ceil(cores)} cores"
        )


def main(argv):
    del argv
    data = _DATA.value or folders.sample_images_dir()
    weights = None if _WEIGHTS.value == "none" else _WEIGHTS.value
    classifier = registry.load_classifier(_MODEL.value, weights)
    data_config = datasets.DataConfig(data, limit=_NUM_IMAGES.value).resolved()
    source = data_config.load()
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
    paths = [p for p, _ in folders.folder_examples(data)[:n]]
    spec = registry.REGISTRY[_MODEL.value]()
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
    warm_up_source = datasets.load(data, limit=batch)
    evaluate.predict(
        classifier, warm_up_source, batch_size=batch, verbose=False
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

    second = registry.load_classifier(_SECOND_MODEL.value, weights)
    _two_models([classifier, second], source, warm_up_source, batch)
    _store_and_threads(classifier, source, data_config, batch)

    if _MEMORY.value:
        # 1000 images from the folder, repeated under new names if needed.
        with tempfile.TemporaryDirectory() as folder:
            files = folders.folder_examples(data)
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
