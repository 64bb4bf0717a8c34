"""SavedModel export of the multi-input model (Yang et al. 2021).

Two serving signatures (STYLE.md, section 6; Model Garden export_base.py):

    serve        {"original": [B, S, S, 3] uint8, "qf100": ..., ...}
                 -> {"output_0": [B, C] float32 probabilities}
                 (also `serving_default`; `loaded.serve(...)` returns the
                 tensor itself)
    serve_bytes  {"image_bytes": [B] tf.string image files}
                 -> {"probabilities": [B, C] float32,
                     "status": [B] tf.string, "" where the row is valid}

`serve_bytes` makes the JPEG candidates inside, as for training, and checks
each file first as every data source does (`guard.tf_header_problem`): a
file over the size limit, a header claiming too many pixels (a 700-byte JPEG
can claim 13000 x 13000) or a file that cannot be decoded gives a row of
zeros and a one-line status; the other rows are served.

`experiments/export_savedmodel.py` is its command line
(`export_from_workdir`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from compression_helps.core import files
from compression_helps.engine import candidates, job
from compression_helps.multi_input import network, train
from compression_helps.sources import guard

__all__ = [
    "SAVED_MODEL_DIR",
    "SERVE_BYTES_ENDPOINT",
    "SERVE_ENDPOINT",
    "UNDECODABLE",
    "export_from_workdir",
    "export_saved_model",
]

SERVE_ENDPOINT = "serve"
SERVE_BYTES_ENDPOINT = "serve_bytes"
SAVED_MODEL_DIR = "saved_model"  # In the training workdir, by default.
_SAVED_MODEL_PB = "saved_model.pb"
UNDECODABLE = "cannot decode image"  # The status of a file TF cannot decode.


def _check_export_dir(export_dir: str) -> None:
    """Refuses to replace anything but an earlier SavedModel."""
    if not os.path.lexists(export_dir):
        return
    if not os.path.isdir(export_dir) or os.path.islink(export_dir):
        raise ValueError(f"{export_dir}: exists and is not a folder")
    if os.listdir(export_dir) and not os.path.exists(
        os.path.join(export_dir, _SAVED_MODEL_PB)
    ):
        raise ValueError(
            f"{export_dir}: folder holds files that are not a SavedModel; "
            "use a new or empty --export_dir"
        )


def export_saved_model(
    model: keras.Model,
    resize: Callable[[tf.Tensor], tf.Tensor],
    export_dir: str,
    qualities: Sequence[int | candidates.Codec] = candidates.QUALITIES,
    limits: guard.Limits = guard.DEFAULT_LIMITS,
) -> None:
    """Writes a SavedModel with two serving signatures.

    `SERVE_ENDPOINT` (also `serving_default`) takes the V uint8 inputs
    `{name: [B, S, S, 3] uint8}` and returns `[B, C]` probabilities
    (signature output key `output_0`). `SERVE_BYTES_ENDPOINT` takes
    `image_bytes`, `[B]` tf.string image files, and makes the candidates
    inside (`candidates.make_candidates`: JPEG encode, decode, the
    backbone's crop and resize, rounding to uint8), exactly as
    `network.make_dataset` does for training. It returns
    `{"probabilities": [B, C] float32, "status": [B] tf.string}`: status ""
    for a served row; for a file refused by `limits` (`guard.tf_header_problem`,
    checked before decoding) or one that cannot be decoded (`UNDECODABLE`)
    a one-line reason and a row of zeros, while the other rows are served.
    An empty batch gives `[0, C]` and `[0]`.
    Candidates from `candidates.Codec`s built on `tf.numpy_function` (custom
    tables) cannot be saved: export standard JPEG QFs.

    The folder is written whole, then renamed into place: an earlier
    SavedModel there is replaced, any other content refused.

    Args:
      model: a `network.build_multi_input_model` model.
      resize: the backbone's crop and resize (`models.Classifier.resize`).
      export_dir: output directory.
      qualities: JPEG QFs of candidates 1..V-1 (as for `model`).
      limits: the largest file and the most pixels `serve_bytes` decodes.

    Raises:
      ValueError: `export_dir` exists and is not a SavedModel folder.
    """
    _check_export_dir(export_dir)
    os.makedirs(os.path.dirname(os.path.abspath(export_dir)), exist_ok=True)
    names = network.input_names(qualities)
    size = int(model.get_layer(names[0]).output.shape[1])  # The InputLayer.
    num_classes = int(model.output_shape[-1])
    qualities = tuple(qualities)
    pixels_shape = (len(names), size, size, 3)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: dict[str, tf.Tensor]) -> tf.Tensor:
        return model(images, training=False)

    def checked_pixels(index: tf.Tensor, image_bytes: tf.Tensor):
        problem = guard.tf_header_problem(image_bytes, limits)
        pixels = tf.cond(  # Refused files are never decoded.
            tf.equal(problem, ""),
            lambda: candidates.make_candidates(
                {"image_bytes": image_bytes}, resize, qualities
            )["pixels"],
            lambda: tf.zeros(pixels_shape, tf.uint8),
        )
        return index, problem, pixels  # [], [], [V, S, S, 3] uint8

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        count = tf.shape(image_bytes, out_type=tf.int64)[0]
        # Candidates are made on host threads, image by image (JPEG ops are
        # not batched). A file whose decoding fails is dropped by
        # `ignore_errors` instead of failing the batch; its index is missing
        # below, which gives its status.
        batches = (
            tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
            .map(checked_pixels, num_parallel_calls=tf.data.AUTOTUNE)
            .ignore_errors()
            .batch(tf.maximum(count, 1))
        )
        nothing = (
            tf.zeros([0], tf.int64),
            tf.zeros([0], tf.string),
            tf.zeros((0, *pixels_shape), tf.uint8),
        )
        # At most one batch; none when the batch is empty or all dropped.
        index, problem, pixels = (
            batches.concatenate(tf.data.Dataset.from_tensors(nothing))
            .take(1)
            .get_single_element()
        )
        served = tf.where(tf.equal(problem, ""))[:, 0]
        probabilities = tf.cond(
            tf.size(served) > 0,
            lambda: serve(
                network.to_inputs({"pixels": tf.gather(pixels, served)}, names)
            ),
            lambda: tf.zeros([0, num_classes]),
        )
        return {
            "probabilities": tf.scatter_nd(
                tf.gather(index, served)[:, None],
                probabilities,
                tf.stack([count, num_classes]),
            ),
            "status": tf.tensor_scatter_nd_update(
                tf.fill([count], UNDECODABLE), index[:, None], problem
            ),
        }

    image_spec = {
        name: tf.TensorSpec((None, size, size, 3), tf.uint8, name=name)
        for name in names
    }
    archive.add_endpoint(SERVE_ENDPOINT, serve, input_signature=[image_spec])
    archive.add_endpoint(
        SERVE_BYTES_ENDPOINT,
        serve_bytes,
        input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")],
    )
    with files.atomic_path(export_dir) as tmp_dir:
        archive.write_out(tmp_dir, verbose=False)
        # A folder cannot be renamed onto a non-empty one: the old export
        # goes just before the new one takes its place.
        if os.path.isdir(export_dir):
            shutil.rmtree(export_dir)


def export_from_workdir(workdir: str, export_dir: str | None = None) -> str:
    """Exports the model of a `train.train_and_evaluate` run as a SavedModel.

    See `export_saved_model` for its two signatures. The training run's
    folder is opened like a resumed run (`job.open_finished`): locked, and
    refused if its input files changed; an export inside it is recorded as
    the run's, so a fresh training run there removes it.

    Args:
      workdir: the training workdir (`config.json`, `model.keras`).
      export_dir: output directory; None: `<workdir>/saved_model`.

    Returns:
      The SavedModel directory.

    Raises:
      FileNotFoundError: no trained model in `workdir`.
      ValueError: not a training workdir, one in use, or an `export_dir`
        that holds other files or the workdir itself.
    """
    model_path = os.path.join(workdir, train.MODEL_FILE)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path}: no trained model")
    config, record = train.read_config(workdir)
    export_dir = export_dir or os.path.join(workdir, SAVED_MODEL_DIR)
    relative = os.path.relpath(
        os.path.realpath(export_dir), os.path.realpath(workdir)
    )
    if relative == os.curdir:
        raise ValueError(f"{export_dir}: is the workdir; use a subfolder")
    inside = relative != os.pardir and not relative.startswith(
        os.pardir + os.sep
    )
    with job.open_finished(train.JOB, workdir, config, record) as run:
        if inside:
            export_dir = run.path(relative)
        model = keras.saving.load_model(model_path, compile=False)
        size = int(model.get_layer(network.ORIGINAL).output.shape[1])
        # Only for its crop and resize: random weights are enough.
        backbone = dataclasses.replace(
            config.model, weights=None, image_size=size
        )
        export_saved_model(
            model, backbone.load().resize, export_dir, config.qualities
        )
    return export_dir
