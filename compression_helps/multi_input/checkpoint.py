"""Resumable training: what `fit` keeps after every epoch, and restores.

`Backup` replaces `keras.callbacks.BackupAndRestore`, which writes its
weights file and then its epoch number in place: a kill during or between
the two leaves a state that cannot be restored, or one whose weights and
epoch disagree. Here every epoch's state is a new file written atomically
(`rundir.atomic_path`), and a small record, also written atomically after
it, names the last complete one; the older file goes only then.

`MetricsLog` appends one whole JSON line per epoch; a resumed run first
drops the lines of epochs after the restored state (an interruption between
the log and the backup), so the log always matches the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import keras
import tensorflow as tf
from absl import logging

from compression_helps.core import files, progress, rundir

# Epoch e's shuffle seed is seed * stride + e: distinct for any realistic
# number of epochs.
_EPOCH_SEED_STRIDE = 1_000_003

__all__ = [
    "BACKUP_DIR",
    "LOG_DIR",
    "METRICS_FILE",
    "Backup",
    "MetricsLog",
    "callbacks",
    "fit",
]

BACKUP_DIR = "backup"
LOG_DIR = "logs"
METRICS_FILE = "metrics.jsonl"
_RECORD_FILE = "checkpoint.json"
_WEIGHTS_SUFFIX = ".weights.h5"  # Keras' save_weights needs it.


class Backup(keras.callbacks.Callback):
    """Saves the training state after every epoch; `restore` continues it.

    The state is the trained model's weights and its optimizer's variables
    (Keras' `save_weights` of a compiled model), plus the epoch count.
    """

    def __init__(self, folder: str | None, write: bool = True):
        """Initialises the callback.

        Args:
          folder: where the state is kept; None: no state (nothing to
            restore, nothing written).
          write: save the state after every epoch; False for a process
            that only reads it (a non-chief worker).
        """
        super().__init__()
        self._folder = folder
        self._write = write and folder is not None

    def _record(self) -> dict | None:
        if self._folder is None:
            return None
        path = os.path.join(self._folder, _RECORD_FILE)
        if not os.path.exists(path):
            return None
        record = files.read_json(path)
        if not (
            isinstance(record, dict)
            and isinstance(record.get("epoch"), int)
            and isinstance(record.get("weights"), str)
        ):
            raise ValueError(
                f"{path}: not a training state of this version; drop "
                "--resume or use a new --workdir"
            )
        return record

    def last_epoch(self) -> int:
        """Epochs the saved state has finished; 0 without one."""
        record = self._record()
        return 0 if record is None else record["epoch"]

    def restore(self, model: keras.Model) -> int:
        """Loads the saved state into a compiled `model`.

        Args:
          model: the model being trained, compiled as when it was saved.

        Returns:
          The epoch to continue from (`fit`'s `initial_epoch`); 0 without a
          saved state.
        """
        record = self._record()
        if record is None:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            # Its variables must exist to be loaded.
            with model.distribute_strategy.scope():
                model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self._folder, record["weights"]))
        logging.info("Resuming after epoch %d", record["epoch"])
        return record["epoch"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Saves the state after `epoch` (0-based)."""
        if not self._write:
            return
        os.makedirs(self._folder, exist_ok=True)
        name = f"epoch-{epoch + 1:06d}{_WEIGHTS_SUFFIX}"
        with files.atomic_path(os.path.join(self._folder, name)) as tmp:
            self.model.save_weights(tmp)
        files.write_json(
            os.path.join(self._folder, _RECORD_FILE),
            {"epoch": epoch + 1, "weights": name},
        )
        for old in os.listdir(self._folder):  # Only now: no longer needed.
            if old.endswith(_WEIGHTS_SUFFIX) and old != name:
                os.remove(os.path.join(self._folder, old))


class MetricsLog(keras.callbacks.Callback):
    """One line `{"epoch": n, "loss": ..., ...}` per epoch in a JSONL file."""

    def __init__(self, path: str, initial_epoch: int = 0):
        """Initialises the log, keeping the lines of epochs already done.

        Args:
          path: the `.jsonl` file.
          initial_epoch: epochs the restored state has finished; lines of
            later epochs (and a line cut short) are dropped.
        """
        super().__init__()
        self._path = path
        kept = []
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and (
                        row.get("epoch", initial_epoch + 1) <= initial_epoch
                    ):
                        kept.append(line.rstrip("\n") + "\n")
        files.write_text(path, "".join(kept))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Appends the epoch's metrics (`val_*`: held-out images)."""
        row = {k: float(v) for k, v in (logs or {}).items()}
        logging.info("epoch %d: %s", epoch + 1, row)
        # One write of one whole line: an interruption cuts at most it.
        with open(self._path, "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, **row}) + "\n")


class _OneEpoch(keras.callbacks.Callback):
    """Ends `fit` after the epoch it started with (see `fit`)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # Keras checks it after every callback's on_epoch_end.
        self.model.stop_training = True


def callbacks(
    run: rundir.RunDir | None, backup: Backup, initial_epoch: int
) -> list[keras.callbacks.Callback]:
    """The callbacks of a resumable `fit`.

    Args:
      run: the run directory; None for a process that writes nothing (a
        non-chief worker).
      backup: the training state's callback.
      initial_epoch: epochs the restored state has finished.

    Returns:
      The metrics log, TensorBoard (`<run>/logs`) and the backup, in this
      order: a metrics line of an epoch whose state was not saved is
      dropped when the run resumes.
    """
    if run is None:
        return [backup]
    return [
        MetricsLog(run.path(METRICS_FILE), initial_epoch),
        keras.callbacks.TensorBoard(run.path(LOG_DIR), write_graph=False),
        backup,
    ]


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch.

    A function of the run's seed and the epoch alone, so a resumed run sees
    the order an uninterrupted one saw.
    """
    return seed * _EPOCH_SEED_STRIDE + epoch


def fit(
    model: keras.Model,
    train: Callable[[int], tf.data.Dataset],
    evaluation: tf.data.Dataset,
    epochs: int,
    run: rundir.RunDir | None,
    backup: Backup,
    verbose: bool = True,
) -> None:
    """`model.fit` that continues from the saved state and saves its own.

    Keras runs one epoch at a time, on that epoch's own data set: with
    `Dataset.shuffle(reshuffle_each_iteration=True)` the order of each epoch
    would come from a generator that starts again with the process, so a
    resumed run would train epoch k in the order of epoch 0.

    Args:
      model: a compiled model.
      train: `epoch -> its training batches` (shuffled with `epoch_seed`).
      evaluation: held-out batches, evaluated after every epoch.
      epochs: the total number of epochs, including those already done.
      run: see `callbacks`.
      backup: where the state is saved, and restored from.
      verbose: Keras' progress: a bar on a terminal, else a line per
        epoch.
    """
    initial_epoch = backup.restore(model)
    epoch_callbacks = [*callbacks(run, backup, initial_epoch), _OneEpoch()]
    for epoch in range(initial_epoch, epochs):
        model.fit(
            train(epoch),
            # The run's epochs, so that Keras shows "Epoch k/N", not "k/k";
            # `_OneEpoch` ends the call after epoch k.
            epochs=epochs,
            initial_epoch=epoch,
            validation_data=evaluation,
            shuffle=False,  # The data sets shuffle themselves, seeded.
            callbacks=epoch_callbacks,
            # One plain line per epoch in a log file, not a redrawn bar.
            verbose=progress.keras_verbose(verbose),
        )
