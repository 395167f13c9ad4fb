"""Affine ablation bijector: parameterisation, round trip, log-dets against autodiff."""

import numpy as np
import pytest
import tensorflow as tf

from tflatent.bijectors import TRANSFORMS, Affine, NLSq


def random_bijector(shape=(1000, 2), seed=0):
    raw = np.random.default_rng(seed).normal(0.0, 2.0, shape)
    return Affine.from_raw_params(tf.constant(raw, tf.float64)), raw


def test_raw_parameterisation_is_shift_and_half_log_variance():
    bijector, raw = random_bijector()
    eps = tf.constant(np.random.default_rng(1).normal(size=1000), tf.float64)
    np.testing.assert_allclose(bijector.forward(eps), raw[:, 0] + np.exp(raw[:, 1] / 2) * eps, rtol=1e-12)
    np.testing.assert_allclose(bijector.forward_log_det_jacobian(eps, event_ndims=0), raw[:, 1] / 2)
    assert Affine.num_params == 2


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_round_trip_and_log_dets_match_autodiff(dtype):
    raw = np.random.default_rng(2).normal(0.0, 2.0, (1000, 2))
    bijector = Affine.from_raw_params(tf.constant(raw, dtype))
    z = tf.constant(np.random.default_rng(3).uniform(-50, 50, 1000), dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        eps = bijector.inverse(z)
        eps_copy = tf.identity(eps)
        tape.watch(eps_copy)
        z_back = bijector.forward(eps_copy)
    np.testing.assert_allclose(z_back, z, rtol=1e-5 if dtype == tf.float32 else 1e-12)
    np.testing.assert_allclose(bijector.inverse_log_det_jacobian(z, 0), np.log(tape.gradient(eps, z)),
                               atol=1e-5)
    np.testing.assert_allclose(bijector.forward_log_det_jacobian(eps_copy, 0),
                               np.log(tape.gradient(z_back, eps_copy)), atol=1e-5)


def test_log_det_broadcasts_over_batch_and_sums_over_event():
    raw = tf.constant(np.random.default_rng(4).normal(size=(3, 2)), tf.float32)  # params [D=3]
    bijector = Affine.from_raw_params(raw)
    z = tf.zeros([5, 3])
    ildj = bijector.inverse_log_det_jacobian(z, event_ndims=1)
    np.testing.assert_allclose(ildj, np.full(5, -raw[:, 1].numpy().sum() / 2), rtol=1e-6)


def test_transforms_registry():
    assert TRANSFORMS == {"nlsq": NLSq, "affine": Affine}


def test_raw_params_with_the_wrong_last_axis_are_rejected():
    with pytest.raises(ValueError, match=r"\[\.\.\., D, 2\]"):
        Affine.from_raw_params(tf.zeros([3, 5]))
