"""Where training runs: `tf.distribute` strategies, and prediction on them.

Multi-input training (`train`) runs under any of `STRATEGIES`; only the
chief of a multi-worker run writes files (`is_chief`).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "STRATEGIES",
    "barrier",
    "is_chief",
    "make_strategy",
    "predict_batch",
]

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
    return _reduce_each_leaf(tf.distribute.MultiWorkerMirroredStrategy())


def _reduce_each_leaf(
    strategy: tf.distribute.Strategy,
) -> tf.distribute.Strategy:
    """Makes a multi-worker strategy reduce what Keras' `fit` gives it.

    Keras 3 (keras-team/keras issue 20585) asks the collective strategy of
    several workers for two reductions it refuses: its first batch, a nested
    structure, as one value ("Attempt to convert a value (PerReplica ...)"),
    and each scalar log (loss, metrics) along an axis 0 it does not have.
    What those calls mean is a reduction of each leaf, and of a scalar over
    the replicas only.
    """
    reduce = strategy.reduce

    def reduce_leaf(reduce_op, leaf, axis):
        if axis is not None and not leaf.shape.rank:
            axis = None  # A scalar: across the replicas only.
        return reduce(reduce_op, leaf, axis)

    def reduce_each(reduce_op, value, axis=None):
        return tf.nest.map_structure(
            lambda leaf: reduce_leaf(reduce_op, leaf, axis), value
        )

    strategy.reduce = reduce_each
    return strategy


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


def _is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Waits until every worker of a multi-worker run has come here.

    A collective sum over all workers, which none can finish alone; a no-op
    for a single process.

    Args:
      strategy: the training strategy.
    """
    if _is_multi_worker(strategy):
        strategy.reduce(
            tf.distribute.ReduceOp.SUM,
            strategy.run(lambda: tf.constant(1.0)),
            axis=None,
        )


def predict_batch(
    model: keras.Model, inputs: tf.Tensor | Mapping[str, tf.Tensor]
) -> np.ndarray:
    """`model.predict_on_batch` that also splits the batch over replicas.

    Under a multi-replica `tf.distribute` strategy Keras' `predict_on_batch`
    gives every replica the whole batch and concatenates their outputs;
    `predict` on a one-batch data set splits it instead. Across workers
    Keras' `predict` gives each worker its own part only, so there every
    worker runs the whole batch itself (it needs no other worker).

    Args:
      model: any Keras model.
      inputs: one batch of its inputs.

    Returns:
      Its outputs as NumPy (a dict of them for a model with named outputs).
    """
    strategy = model.distribute_strategy
    if _is_multi_worker(strategy):
        outputs = model(inputs, training=False)
    elif strategy.num_replicas_in_sync == 1:
        outputs = model.predict_on_batch(inputs)
    else:
        batch = tf.data.Dataset.from_tensors(inputs)
        outputs = model.predict(batch, verbose=0)
    return keras.tree.map_structure(np.asarray, outputs)
