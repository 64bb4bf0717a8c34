"""SavedModel export of the multi-input model (Yang et al. 2021).

Two serving signatures (STYLE.md, section 6; Model Garden export_base.py):

    serve        {"original": [B, S, S, 3] uint8, "qf100": ..., ...}
                 -> [B, C] probabilities (also `serving_default`)
    serve_bytes  image_bytes: [B] tf.string image files -> [B, C]; the JPEG
                 candidates are made inside, as for training

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

from compression_helps import candidates, files, multi_input, rundir, train

__all__ = [
    "SAVED_MODEL_DIR",
    "SERVE_BYTES_ENDPOINT",
    "SERVE_ENDPOINT",
    "export_from_workdir",
    "export_saved_model",
]

SERVE_ENDPOINT = "serve"
SERVE_BYTES_ENDPOINT = "serve_bytes"
SAVED_MODEL_DIR = "saved_model"  # In the training workdir, by default.
_SAVED_MODEL_PB = "saved_model.pb"


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
) -> None:
    """Writes a SavedModel with two serving signatures.

    `SERVE_ENDPOINT` (also `serving_default`) takes the V uint8 inputs
    `{name: [B, S, S, 3] uint8}`; `SERVE_BYTES_ENDPOINT` takes `image_bytes`,
    `[B]` tf.string image files, and makes the candidates inside
    (`candidates.make_candidates`: JPEG encode, decode, the backbone's crop
    and resize, rounding to uint8), exactly as `multi_input.make_dataset`
    does for training. Both return `[B, C]` probabilities. A file that
    cannot be decoded fails the whole call (the caller sees which batch).
    Candidates from `candidates.Codec`s built on `tf.numpy_function` (custom
    tables) cannot be saved: export standard JPEG QFs.

    The folder is written whole, then renamed into place: an earlier
    SavedModel there is replaced, any other content refused.

    Args:
      model: a `multi_input.build_multi_input_model` model.
      resize: the backbone's crop and resize (`models.Classifier.resize`).
      export_dir: output directory.
      qualities: JPEG QFs of candidates 1..V-1 (as for `model`).

    Raises:
      ValueError: `export_dir` exists and is not a SavedModel folder.
    """
    _check_export_dir(export_dir)
    os.makedirs(os.path.dirname(os.path.abspath(export_dir)), exist_ok=True)
    names = multi_input.input_names(qualities)
    size = int(model.get_layer(names[0]).output.shape[1])  # The InputLayer.
    qualities = tuple(qualities)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: dict[str, tf.Tensor]) -> tf.Tensor:
        return model(images, training=False)

    def pixels_of(image_bytes: tf.Tensor) -> tf.Tensor:
        example = {"image_bytes": image_bytes}
        return candidates.make_candidates(example, resize, qualities)["pixels"]

    def serve_bytes(image_bytes: tf.Tensor) -> tf.Tensor:
        # Candidates are made on the host, image by image (JPEG ops are not
        # batched); [B, V, S, S, 3] uint8.
        pixels = tf.map_fn(
            pixels_of,
            image_bytes,
            fn_output_signature=tf.TensorSpec(
                (len(names), size, size, 3), tf.uint8
            ),
        )
        return serve(multi_input.to_inputs({"pixels": pixels}, names))

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
    folder is opened like a resumed run (`rundir.RunDir.open`): locked, and
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
    with rundir.RunDir.open(
        workdir,
        train.JOB,
        config,
        resume=True,
        data=record.get("data"),
        inputs=list(record.get("inputs", {})),
    ) as run:
        if inside:
            export_dir = run.path(relative)
        model = keras.saving.load_model(model_path, compile=False)
        size = int(model.get_layer(multi_input.ORIGINAL).output.shape[1])
        # Only for its crop and resize: random weights are enough.
        backbone = dataclasses.replace(
            config.model, weights=None, image_size=size
        )
        export_saved_model(
            model, backbone.load().resize, export_dir, config.qualities
        )
    return export_dir
