"""Shared fakes for tests: real sample images, tiny JPEGs, tiny folders."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(
    module: str, *flags: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs `python -m <module> <flags>` from the repo root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=timeout,
    )


def sample_dir() -> str:
    """The real ImageNet sample images (one per even class index)."""
    return os.environ.get(
        "IMAGENET_SAMPLE_DIR",
        os.path.join(REPO_ROOT, "..", "shared", "imagenet-sample"),
    )


def has_samples() -> bool:
    return os.path.isdir(sample_dir())


SKIP_NO_SAMPLES = (
    "ImageNet sample images not found; set IMAGENET_SAMPLE_DIR to a folder "
    "of <wnid>_<name>.JPEG files"
)


def sample_paths(n: int | None = None) -> list[str]:
    names = sorted(f for f in os.listdir(sample_dir()) if f.endswith(".JPEG"))
    return [os.path.join(sample_dir(), f) for f in names[:n]]


def random_image(height=32, width=48, seed=0) -> np.ndarray:
    """A smooth-ish random uint8 image (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3))
    image = tf.image.resize(small[None].astype(np.float32), [height, width])
    return np.clip(image[0].numpy(), 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def write_image_folder(folder: str, labels: list[int], seed: int = 0) -> list:
    """Writes `<wnid>_<i>.JPEG` files for the given class indices."""
    from compression_helps import datasets

    paths = []
    for i, label in enumerate(labels):
        path = os.path.join(folder, f"{datasets.wnids()[label]}_{i}.JPEG")
        with open(path, "wb") as f:
            f.write(jpeg_bytes(random_image(seed=seed + i)))
        paths.append(path)
    return paths


def tiny_model_file(
    folder: str, image_size: int = 16, seed: int = 0, num_classes: int = 1000
) -> str:
    """`<folder>/tiny.keras`: a seconds-fast classifier (softmax outputs).

    Takes `[B, S, S, 3]` float pixels in [0, 255], like every model file
    `models.load_classifier` accepts; the one tiny model of the tests.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    path = os.path.join(folder, "tiny.keras")
    keras.Model(inputs, outputs).save(path)
    return path


def random_uint8_inputs(
    size: int, names: tuple[str, ...], batch: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """`{name: [batch, size, size, 3] uint8}` random images, one per name."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        for name in names
    }


def start_data_service(num_workers: int = 1) -> tuple:
    """A local tf.data service: `(dispatcher, workers)`; keep them alive."""
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    workers = [
        service.WorkerServer(service.WorkerConfig(dispatcher_address=address))
        for _ in range(num_workers)
    ]
    return dispatcher, workers
