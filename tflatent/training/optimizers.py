"""The reference's optimizers (``docs/reference.md`` §4.4) as Keras 3 optimizers, and resetting them.

Flow models: Adam, lr 1e−3, (β₁, β₂) = (0.9, 0.999), ε = 1e−8 (PyTorch's values); baselines: SGD, lr 20,
no momentum. Both clip the global gradient norm (``train.clip_norm``) over the gradient summed across
replicas (:class:`CrossReplicaClipping`) and accumulate ``train.grad_accum`` batches per step on one
device. :func:`reset_state` zeroes the optimizer's state in place, as the reference's rebuild on each
learning-rate decay does; :func:`replace_learning_rate` puts the configured rate back after ``--resume``
loaded a checkpoint's. Why each of these differs from plain Keras (where Keras puts Adam's ε, how it
clips under ``tf.distribute``, where its gradient accumulation fails) is in ``docs/training.md``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflatent.config import OPTIMIZERS

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


class CrossReplicaClipping:
    """Mixin: ``global_clipnorm`` over the gradient summed across replicas.

    ``g_r`` is replica r's gradient of its share of the loss (already divided by the global batch),
    so the global gradient is ``g = Σ_r g_r``. Every replica returns ``g_r · min(1, c / ‖g‖)``; the
    optimizer's own sum then gives the clipped global gradient ``g · min(1, c / ‖g‖)``. A non-finite
    norm makes the scale NaN, as Keras's own clipping does, so a NaN is never hidden.
    """

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if not self.global_clipnorm or context is None or context.num_replicas_in_sync == 1:
            return super()._clip_gradients(grads)
        present = [g for g in grads if g is not None]
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, present)
        norm = tf.linalg.global_norm(total)
        clip = tf.cast(self.global_clipnorm, norm.dtype)
        scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
        return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]


class Adam(CrossReplicaClipping, keras.optimizers.Adam):
    """Keras Adam with the global-norm clipping of :class:`CrossReplicaClipping`."""


class SGD(CrossReplicaClipping, keras.optimizers.SGD):
    """Keras SGD with the global-norm clipping of :class:`CrossReplicaClipping`."""


def make_optimizer(config) -> keras.optimizers.Optimizer:
    """Builds the optimizer of a ``TrainConfig`` (create it inside the strategy's scope)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if config.grad_accum > 1 and replicas > 1:
        raise ValueError(
            f"train.grad_accum = {config.grad_accum} cannot run on {replicas} replicas: Keras 3's gradient "
            "accumulation fails under tf.distribute. Set train.grad_accum = 1 and data.batch_size to "
            f"batch_size x {config.grad_accum} / {replicas} for the same mean gradient per step")
    common = dict(
        learning_rate=config.learning_rate,
        global_clipnorm=config.clip_norm,
        gradient_accumulation_steps=config.grad_accum if config.grad_accum > 1 else None,
    )
    if config.optimizer == "adam":
        return Adam(beta_1=ADAM_BETAS[0], beta_2=ADAM_BETAS[1], epsilon=ADAM_EPSILON, **common)
    if config.optimizer == "sgd":
        return SGD(momentum=0.0, **common)
    raise ValueError(f"train.optimizer = {config.optimizer!r} is not allowed; choose one of: "
                     f"{', '.join(OPTIMIZERS)}")


def reset_state(optimizer: keras.optimizers.Optimizer) -> None:
    """Zeroes every state variable but the learning rate, in place (as if the optimizer were rebuilt).

    For Adam: the step counter (so the bias correction restarts), the first and second moments and
    any gradient accumulators. A ``LossScaleOptimizer`` keeps its loss scale; its inner optimizer is
    reset.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    for variable in inner.variables:
        if variable is not inner.learning_rate:
            variable.assign(tf.zeros(variable.shape, variable.dtype))


def replace_learning_rate(optimizer: keras.optimizers.Optimizer, rate: float) -> float:
    """Sets the learning rate of ``optimizer`` (a ``LossScaleOptimizer``'s inner one) to ``rate`` in place,
    e.g. after loading a checkpoint's optimizer state with its own rate; returns the rate it replaced."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    previous = float(keras.ops.convert_to_numpy(inner.learning_rate))
    inner.learning_rate = rate
    return previous
