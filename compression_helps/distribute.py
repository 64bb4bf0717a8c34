"""Where training runs: `tf.distribute` strategies, and prediction on them.

Multi-input training (`train`) runs under any of `STRATEGIES`; only the
chief of a multi-worker run writes files (`is_chief`).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

__all__ = ["STRATEGIES", "is_chief", "make_strategy", "predict_batch"]

STRATEGIES = ("default", "mirrored", "tpu", "multi_worker")


def make_strategy(
    name: str = "default", tpu: str = "", num_cpu_devices: int = 0
) -> tf.distribute.Strategy:
    """A `tf.distribute` strategy by name.

    Args:
      name: "default" (no distribution), "mirrored" (all local GPUs, else all
        logical CPUs), "tpu" or "multi_worker" (`TF_CONFIG` describes the
        cluster).
      tpu: TPU name or address for "tpu" ("" for the local one).
      num_cpu_devices: split the CPU into this many logical devices first;
        only possible before TensorFlow initialises its devices.

    Returns:
      The strategy.

    Raises:
      ValueError: unknown name, or devices already initialised.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}: {name!r}")
    if num_cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        configs = [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
        try:
            tf.config.set_logical_device_configuration(cpu, configs)
        except RuntimeError as e:  # Devices already initialised.
            raise ValueError(f"cannot split the CPU: {e}") from None
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files.

    Only one worker of a multi-worker run does (the chief, by the
    `TF_CONFIG` rule); every other strategy has a single process.

    Args:
      strategy: the training strategy.

    Returns:
      True for the chief (or the only process).
    """
    return strategy.extended.should_checkpoint


def predict_batch(
    model: keras.Model, inputs: tf.Tensor | Mapping[str, tf.Tensor]
) -> np.ndarray:
    """`model.predict_on_batch` that also splits the batch over replicas.

    Under a multi-replica `tf.distribute` strategy Keras' `predict_on_batch`
    gives every replica the whole batch and concatenates their outputs;
    `predict` on a one-batch data set splits it instead.

    Args:
      model: any Keras model.
      inputs: one batch of its inputs.

    Returns:
      Its outputs as NumPy.
    """
    if model.distribute_strategy.num_replicas_in_sync == 1:
        return np.asarray(model.predict_on_batch(inputs))
    batch = tf.data.Dataset.from_tensors(inputs)
    return np.asarray(model.predict(batch, verbose=0))
