import json
import os

import keras
import numpy as np
import tensorflow as tf

from compression_helps.multi_input import checkpoint


class _Interrupted(Exception):
    pass


class _InterruptAt(keras.callbacks.Callback):
    """Fails like a killed job when an epoch starts."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupted(f"interrupted before epoch {epoch + 1}")


def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.1), loss="mse")
    return model


def data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


class BackupTest(tf.test.TestCase):
    def test_restores_weights_optimizer_and_epoch(self):
        folder = os.path.join(self.create_tempdir().full_path, "backup")
        model = tiny_model()
        backup = checkpoint.Backup(folder)
        with self.assertRaises(_Interrupted):
            model.fit(
                data(),
                epochs=3,
                callbacks=[backup, _InterruptAt(2)],
                shuffle=False,
                verbose=0,
            )
        self.assertEqual(backup.last_epoch(), 2)
        # Only the last state is kept, named by its record.
        self.assertEqual(
            sorted(os.listdir(folder)),
            ["checkpoint.json", "epoch-000002.weights.h5"],
        )

        restored = tiny_model()
        self.assertEqual(checkpoint.Backup(folder).restore(restored), 2)
        for got, want in zip(restored.weights, model.weights, strict=True):
            self.assertAllEqual(got, want)
        for got, want in zip(
            restored.optimizer.variables, model.optimizer.variables, strict=True
        ):
            self.assertAllEqual(got, want)

    def test_nothing_to_restore(self):
        folder = self.create_tempdir().full_path
        self.assertEqual(checkpoint.Backup(None).restore(tiny_model()), 0)
        self.assertEqual(checkpoint.Backup(folder).last_epoch(), 0)

    def test_reader_writes_nothing(self):
        folder = os.path.join(self.create_tempdir().full_path, "backup")
        tiny_model().fit(
            data(),
            callbacks=[checkpoint.Backup(folder, write=False)],
            shuffle=False,
            verbose=0,
        )
        self.assertFalse(os.path.exists(folder))

    def test_damaged_record_is_one_line(self):
        folder = self.create_tempdir().full_path
        with open(os.path.join(folder, "checkpoint.json"), "w") as f:
            f.write('{"epoch": ')
        with self.assertRaisesRegex(ValueError, "checkpoint.json"):
            checkpoint.Backup(folder).last_epoch()


class MetricsLogTest(tf.test.TestCase):
    def test_resumed_log_keeps_only_finished_epochs(self):
        path = self.create_tempfile(
            "metrics.jsonl",
            content='{"epoch": 1, "loss": 2.0}\n'
            '{"epoch": 2, "loss": 1.0}\n'
            '{"epoch": 3, "lo',  # Cut short by a kill.
        ).full_path
        log = checkpoint.MetricsLog(path, initial_epoch=1)
        log.on_epoch_end(1, {"loss": 0.5})
        with open(path) as f:
            rows = [json.loads(line) for line in f]
        self.assertEqual(
            rows, [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 0.5}]
        )

    def test_fresh_log_is_empty(self):
        path = self.create_tempfile("metrics.jsonl", "{}\n").full_path
        checkpoint.MetricsLog(path)
        with open(path) as f:
            self.assertEqual(f.read(), "")


if __name__ == "__main__":
    tf.test.main()
