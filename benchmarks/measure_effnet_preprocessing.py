"""Which preprocessing the EfficientNet-Lite0 checkpoint was trained with.

Measured, not guessed: top-1/top-5 of the converted ImageNet weights on a
folder of labelled ImageNet images (`<wnid>_<name>.JPEG` or
`<wnid>/<name>.JPEG`) under every combination of
  - normalisation: (x - 127) / 128 (TF Lite models) or ImageNet mean/std
    ([0.485, 0.456, 0.406] / [0.229, 0.224, 0.225] of x / 255);
  - resize policy: central crop 0.875 of the shorter side, central square
    (crop 1.0), or the whole image squashed to S x S;
  - interpolation: bilinear or bicubic (`tf.image.resize`).
Decoding: `tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")`.

Run on demand, never in CI (about 10 minutes on 2 CPU cores for 500
images):

    python -m benchmarks.measure_effnet_preprocessing --data=/path/to/images

Prints a Markdown table, one row per candidate.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from compression_helps.models import (
    efficientnet_lite,
    efficientnet_weights,
    registry,
)
from compression_helps.sources import folders

_DATA = flags.DEFINE_string(
    "data",
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "..",
        "shared",
        "imagenet-sample",
    ),
    "Folder of labelled ImageNet JPEGs.",
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 50, "Images per model call.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Use the first N images (0: all).")

_NORMALIZATIONS = {
    "(x-127)/128": ((127.0,) * 3, (128.0,) * 3),
    "ImageNet mean/std": (
        tuple(255.0 * m for m in (0.485, 0.456, 0.406)),
        tuple(255.0 * s for s in (0.229, 0.224, 0.225)),
    ),
}
_RESIZES = ("crop 0.875", "crop 1.0", "squash")
_METHODS = ("bilinear", "bicubic")


def _resize(image_uint8, policy, method, image_size):
    if policy == "squash":
        resized = tf.image.resize(
            tf.cast(image_uint8, tf.float32), [image_size] * 2, method=method
        )
        return tf.clip_by_value(resized, 0.0, 255.0)
    fraction = float(policy.split()[1])
    return registry.center_crop_and_resize(
        image_uint8, image_size, fraction, method
    )


def main(argv):
    del argv
    examples = folders.folder_examples(_DATA.value)
    examples = [(p, label) for p, label in examples if label >= 0]
    if _LIMIT.value:
        examples = examples[: _LIMIT.value]
    labels = np.array([label for _, label in examples])
    images = [
        tf.io.decode_jpeg(
            tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE"
        )
        for path, _ in examples
    ]
    model = efficientnet_lite.build_efficientnet_lite()
    efficientnet_weights.load_imagenet_weights(model)
    size = efficientnet_lite.IMAGE_SIZE
    print(f"{len(examples)} images from {_DATA.value}\n")
    print("| normalisation | resize | interpolation | top-1 % | top-5 % |")
    print("|---|---|---|---|---|")
    start = time.perf_counter()
    for policy, method in itertools.product(_RESIZES, _METHODS):
        pixels = np.stack(
            [_resize(im, policy, method, size).numpy() for im in images]
        )  # [N, S, S, 3] float32 in [0, 255]
        for norm, (mean, std) in _NORMALIZATIONS.items():
            x = (pixels - np.float32(mean)) / np.float32(std)
            probs = model.predict(x, batch_size=_BATCH_SIZE.value, verbose=0)
            top5 = np.argsort(-probs, axis=1)[:, :5]
            top1_acc = 100 * np.mean(top5[:, 0] == labels)
            top5_acc = 100 * np.mean(np.any(top5 == labels[:, None], axis=1))
            print(
                f"| {norm} | {policy} | {method} | {top1_acc:.1f} | "
                f"{top5_acc:.1f} |",
                flush=True,
            )
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    app.run(main)
