"""Choosing the ``tf.distribute`` strategy, the precision policy and the global batch.

``train.distribute``:

* ``none`` – TensorFlow's default strategy (one device).
* ``mirrored`` – ``MirroredStrategy`` over every local GPU; on a machine without GPUs, over the CPU
  split into ``logical_cpus`` logical devices (how the tests exercise data parallelism).
* ``multi_worker`` – ``MultiWorkerMirroredStrategy`` over the cluster described by the ``TF_CONFIG``
  environment variable (one process per worker, started with the same command).
* ``tpu`` – ``TPUStrategy`` on the TPU the cluster resolver finds.
* ``auto`` – ``mirrored`` when there are two or more GPUs, else ``none``.

Each replica gets ``data.batch_size`` sequences, so the global batch is ``batch_size × replicas``;
models divide their summed per-sequence loss by the number of sequences in the step's global batch
(:func:`global_count`, :func:`global_average`), so a batch that splits unevenly (the last one, a small
validation set, an empty share) weighs every sequence as one device does. ``mirrored`` and ``multi_worker`` use the
strategies below, whose ``reduce`` takes what Keras passes for such batches (:class:`KerasReduce`).

Device set-up must precede TensorFlow's runtime: the logical CPU split and the multi-worker collective
context only work before the first op runs, so call :func:`make_strategy` first thing in a process.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Optional

import keras
import tensorflow as tf

from tflatent.config import STRATEGIES

log = logging.getLogger(__name__)



def make_strategy(name: str = "auto", logical_cpus: Optional[int] = None) -> tf.distribute.Strategy:
    """Returns the strategy called ``name``; see the module docstring."""
    if name not in STRATEGIES:
        raise ValueError(f"train.distribute = {name!r} is not allowed; choose one of: {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        return _multi_worker()
    if name == "tpu":
        return _tpu()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "none" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    if gpus:
        return MirroredStrategy()
    if not logical_cpus:
        raise ValueError("train.distribute = 'mirrored' found no GPU. To mirror over the CPU (for tests), "
                         "set train.logical_cpus (e.g. 2); to train on one device, use 'none'")
    return MirroredStrategy(_split_cpu(logical_cpus))


def _split_cpu(count: int) -> list[str]:
    """Splits the CPU into ``count`` logical devices (before TF initialises them); returns their names."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as err:
        if len(tf.config.list_logical_devices("CPU")) < count:
            raise RuntimeError(
                f"cannot split the CPU into {count} logical devices: TensorFlow has already initialised "
                f"its devices ({err}). Create the strategy before any TensorFlow op runs (at the start "
                "of the process, as `python -m tflatent.train` does), or run in a fresh process") from None
    return [device.name for device in tf.config.list_logical_devices("CPU")[:count]]


def _multi_worker() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy from TF_CONFIG, with a clear error when TF_CONFIG is missing or bad."""
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("train.distribute = 'multi_worker' needs the TF_CONFIG environment variable, set "
                         f"differently in each worker process, e.g. TF_CONFIG='{example}'")
    try:
        tf_config = json.loads(raw)
        workers = tf_config["cluster"]["worker"]
        task = tf_config["task"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"TF_CONFIG = {raw!r} is not a cluster description like '{example}'") from None
    log.info("multi-worker: task %s/%s of %d workers", task.get("type"), task.get("index"), len(workers))
    return MultiWorkerMirroredStrategy()


class KerasReduce:
    """Mixin: a strategy ``reduce`` that takes what Keras 3.15's ``fit`` and ``evaluate`` pass it.

    Before the first step Keras reduces the first distributed batch, an ``(x, lengths)`` tuple, with
    ``MEAN`` and ``axis=None`` (keras-team/keras#19246), only to get a template batch for building an
    unbuilt model. An element-wise mean of per-replica batches needs equal shapes, so it fails as
    soon as a batch splits unevenly across replicas ("AddN ... [3,105,88] != [2,105,88]" mirrored,
    "Shape mismatch in the collective instance" across workers). Here a non-scalar leaf reduced with
    ``axis=None`` gives the first local replica's value instead, with no cross-replica traffic (every
    worker takes the same path, so no collective is left waiting); the models here are built before
    ``fit`` and never read it. Keras also reduces every scalar log with ``axis=0``, which fails on a
    rank-0 value across workers ("Invalid reduction dimension 0"): scalars are reduced with
    ``axis=None``. Each leaf is reduced on its own (the collective implementation rejects a tuple).
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def leaf(v):
            rank = self.experimental_local_results(v)[0].shape.rank
            if axis is None and rank:
                return self.experimental_local_results(v)[0]
            return parent.reduce(reduce_op, v, axis if rank else None)

        return tf.nest.map_structure(leaf, value)


class MirroredStrategy(KerasReduce, tf.distribute.MirroredStrategy):
    """``MirroredStrategy`` with the ``reduce`` of :class:`KerasReduce`."""


class MultiWorkerMirroredStrategy(KerasReduce, tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` with the ``reduce`` of :class:`KerasReduce`."""


def _tpu() -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise RuntimeError(f"train.distribute = 'tpu' found no TPU ({err}); use 'auto' elsewhere") from None
    return tf.distribute.TPUStrategy(resolver)


def accelerated(strategy: tf.distribute.Strategy) -> Optional[str]:
    """'GPU' or 'TPU' when the strategy's replicas run on one, else None (CPU)."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "TPU"
    if not tf.config.list_physical_devices("GPU"):
        return None
    if strategy.num_replicas_in_sync == 1:
        return "GPU"  # a one-device strategy places ops on the first GPU
    return "GPU" if any("GPU" in d.upper() for d in strategy.extended.worker_devices) else None


def set_precision(mixed_precision: bool, strategy: tf.distribute.Strategy) -> str:
    """Sets Keras's global dtype policy before the model is built; returns the policy's name.

    ``mixed_float16`` on GPUs (``mixed_bfloat16`` on TPUs): float16 activations with float32
    variables, and Keras wraps the optimizer in a ``LossScaleOptimizer`` at ``compile`` (a custom
    ``train_step`` must then take gradients of ``self.optimizer.scale_loss(loss)``). On a CPU it
    would only slow training down, so the switch is ignored there with a warning.
    """
    device = accelerated(strategy)
    if not mixed_precision:
        policy = "float32"
    elif device is None:
        warnings.warn("train.mixed_precision is on but there is no GPU or TPU: training in float32")
        policy = "float32"
    else:
        policy = "mixed_bfloat16" if device == "TPU" else "mixed_float16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def global_count(per_example: tf.Tensor) -> tf.Tensor:
    """The number of examples in the whole step's batch (float): this replica's, summed across replicas.

    An all-reduce under a multi-replica strategy, so call it in the replica function itself, not inside
    a nested (e.g. XLA-compiled) ``tf.function``. Outside a multi-replica context: the batch size.
    """
    count = tf.cast(tf.shape(per_example)[0], per_example.dtype)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return count


def global_average(per_example: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """Σ of this replica's per-example losses ÷ ``count``, the number of examples in the whole step's batch
    (:func:`global_count`).

    The replicas' results add up to the mean over the global batch, also when it splits unevenly
    (``tf.nn.compute_average_loss`` would divide by this replica's batch × replicas). Outside a
    multi-replica context it is the plain mean.
    """
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), tf.cast(count, per_example.dtype))


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    """The batch of one optimizer step: per-replica batch × replicas in sync."""
    return per_replica * strategy.num_replicas_in_sync


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's shared outputs (checkpoints, logs): worker 0, or the only one."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type or resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())
