"""The reference's optimizers: settings, state reset, and gradient accumulation with clipping."""

import numpy as np
import pytest
import tensorflow as tf

from tflatent.config import TrainConfig
from tflatent.training import optimizers


def _built(config, values=(1.0, -2.0, 3.0)):
    variable = tf.Variable(np.array(values, np.float32))
    optimizer = optimizers.make_optimizer(config)
    optimizer.build([variable])
    return optimizer, variable


def test_adam_and_sgd_have_the_reference_settings():
    adam = optimizers.make_optimizer(TrainConfig())
    assert isinstance(adam, optimizers.Adam)
    assert (float(adam.learning_rate), adam.beta_1, adam.beta_2, adam.epsilon) == pytest.approx(
        (1e-3, 0.9, 0.999, 1e-8))
    assert (adam.global_clipnorm, adam.gradient_accumulation_steps) == (0.25, None)
    sgd = optimizers.make_optimizer(TrainConfig(optimizer="sgd", learning_rate=20.0, grad_accum=8))
    assert isinstance(sgd, optimizers.SGD)
    assert (float(sgd.learning_rate), sgd.momentum, sgd.global_clipnorm) == (20.0, 0.0, 0.25)
    assert sgd.gradient_accumulation_steps == 8


def test_sgd_step_is_the_clipped_gradient_times_the_learning_rate():
    optimizer, variable = _built(TrainConfig(optimizer="sgd", learning_rate=20.0, clip_norm=0.25))
    gradient = np.array([3.0, 0.0, 4.0], np.float32)  # norm 5, clipped to 0.25
    optimizer.apply([tf.constant(gradient)], [variable])
    np.testing.assert_allclose(variable.numpy(), [1.0, -2.0, 3.0] - 20.0 * gradient * 0.25 / 5, rtol=1e-6)


def test_reset_state_zeroes_moments_and_step_but_keeps_the_learning_rate():
    optimizer, variable = _built(TrainConfig(learning_rate=0.01))
    for _ in range(3):
        optimizer.apply([tf.constant([0.1, -0.2, 0.3])], [variable])
    optimizer.learning_rate = 0.0025
    moments = [v for v in optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    assert len(moments) == 2 and all(np.abs(m.numpy()).sum() > 0 for m in moments)
    assert int(optimizer.iterations) == 3
    optimizers.reset_state(optimizer)
    assert all(np.all(m.numpy() == 0) for m in moments)
    assert int(optimizer.iterations) == 0
    assert float(optimizer.learning_rate) == pytest.approx(0.0025)
    # A step after the reset is Adam's first step again: lr · sign(g) (bias-corrected m/√v = ±1).
    before = variable.numpy()
    optimizer.apply([tf.constant([0.5, -0.5, 2.0])], [variable])
    np.testing.assert_allclose(before - variable.numpy(), 0.0025 * np.array([1, -1, 1]), rtol=1e-4)


def test_gradient_accumulation_steps_once_on_the_clipped_mean():
    """grad_accum = 2: two micro-batch gradients give one step on their mean, clipped after averaging."""
    grads = [np.array([0.3, 0.0, 0.4], np.float32), np.array([0.1, 0.2, -0.2], np.float32)]
    accumulating, accumulated = _built(TrainConfig(optimizer="sgd", learning_rate=1.0, clip_norm=0.1, grad_accum=2))
    accumulating.apply([tf.constant(grads[0])], [accumulated])
    np.testing.assert_array_equal(accumulated.numpy(), [1.0, -2.0, 3.0])  # no step after one micro-batch
    accumulating.apply([tf.constant(grads[1])], [accumulated])
    single, direct = _built(TrainConfig(optimizer="sgd", learning_rate=1.0, clip_norm=0.1))
    single.apply([tf.constant((grads[0] + grads[1]) / 2)], [direct])
    np.testing.assert_allclose(accumulated.numpy(), direct.numpy(), rtol=1e-6)
    assert np.linalg.norm(direct.numpy() - [1.0, -2.0, 3.0]) == pytest.approx(0.1, rel=1e-5)
