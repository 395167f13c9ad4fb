"""MaskedDense: masked weights neither act nor learn; shapes and config."""

import numpy as np
import pytest
import tensorflow as tf

from tflatent.layers import MaskedDense

MASK = np.array([[1, 0, 1], [0, 0, 1]])


def test_masked_weights_have_no_effect_and_no_gradient():
    layer = MaskedDense(3, MASK, kernel_initializer="ones")
    x = tf.constant([[2.0, 5.0]])
    with tf.GradientTape() as tape:
        y = layer(x)
    np.testing.assert_allclose(y, [[2.0, 0.0, 7.0]])
    np.testing.assert_array_equal(tape.gradient(y, layer.kernel).numpy() != 0, MASK.astype(bool))


def test_leading_dims_and_config_round_trip():
    layer = MaskedDense(3, MASK, activation="relu")
    x = tf.random.normal([4, 5, 2])
    assert layer(x).shape == (4, 5, 3)
    clone = MaskedDense.from_config(layer.get_config())
    clone.build((None, 2))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), layer(x))


def test_bad_mask_or_input_width_is_rejected():
    with pytest.raises(ValueError, match="units=4"):
        MaskedDense(4, MASK)
    with pytest.raises(ValueError, match="2 input features"):
        MaskedDense(3, MASK)(tf.zeros([1, 5]))
