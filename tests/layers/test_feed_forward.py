"""FeedForwardNet: structure and initialisation of the reference MLP."""

import numpy as np
import tensorflow as tf

from tflatent.layers import FeedForwardNet


def test_structure_and_initialisation():
    net = FeedForwardNet(hidden_units=16, output_units=5, hidden_layers=2)
    net.build((None, 7))
    shapes = [tuple(w.shape) for w in net.weights]
    assert shapes == [(7, 16), (16,), (16, 16), (16,), (16, 5), (5,)]
    kernels, biases = net.weights[::2], net.weights[1::2]
    assert all(np.abs(k.numpy()).max() <= 0.07 and np.abs(k.numpy()).max() > 0.035 for k in kernels)
    assert not any(b.numpy().any() for b in biases)
    assert net(tf.ones([3, 4, 7])).shape == (3, 4, 5)


def test_linear_activation_makes_a_linear_map():
    net = FeedForwardNet(hidden_units=8, output_units=3, hidden_layers=1, activation=None)
    net.build((None, 4))
    x = tf.random.normal([6, 4])
    np.testing.assert_allclose(net(2.0 * x) - net(tf.zeros([1, 4])), 2.0 * (net(x) - net(tf.zeros([1, 4]))),
                               atol=1e-6)


def test_dropout_only_when_training_and_config_round_trip():
    net = FeedForwardNet(hidden_units=32, output_units=3, dropout=0.5)
    net.build((None, 4))
    x = tf.ones([2, 4])
    np.testing.assert_array_equal(net(x), net(x))
    assert not np.allclose(net(x, training=True), net(x))
    clone = FeedForwardNet.from_config(net.get_config())
    clone.build((None, 4))
    clone.set_weights(net.get_weights())
    np.testing.assert_allclose(clone(x), net(x))


def test_weights_are_drawn_independently():
    # A Keras initializer object repeats its draws; a shared one would give layers identical weights.
    net = FeedForwardNet(hidden_units=16, output_units=16, hidden_layers=2)
    net.build((None, 16))
    kernels = [w.numpy().ravel() for w in net.weights[::2]]
    for i in range(len(kernels)):
        for j in range(i + 1, len(kernels)):
            assert not np.isclose(kernels[i][:8], kernels[j][:8]).any()
