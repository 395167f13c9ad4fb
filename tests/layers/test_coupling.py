"""CouplingConditioner: dim-major layout, inputs it depends on, broadcasting, config."""

import numpy as np
import tensorflow as tf
from flow_helpers import randomize_weights

from tflatent.layers import CouplingConditioner


def built(num_kept=3, num_transformed=2, num_params=5, context_dim=4):
    conditioner = CouplingConditioner(num_kept, num_transformed, num_params, context_dim=context_dim,
                                      hidden_units=16)
    conditioner.build()
    return conditioner


def test_reference_sizes():
    conditioner = CouplingConditioner(25, 25, 5, context_dim=500, hidden_units=100)
    conditioner.build()
    assert [tuple(w.shape) for w in conditioner.weights] == [(525, 100), (100,), (100, 100), (100,),
                                                              (100, 125), (125,)]
    assert conditioner.count_params() == 75_325  # docs/reference.md §7.3: 75.3k per SCF layer


def test_outputs_are_dim_major():
    conditioner = built()
    output = conditioner.net.output_layer
    output.kernel.assign(tf.zeros_like(output.kernel))
    output.bias.assign(tf.range(10, dtype=tf.float32))
    out = conditioner(tf.zeros([1, 3]), tf.zeros([1, 4]))
    np.testing.assert_array_equal(out[0], np.arange(10).reshape(2, 5))  # out[i, p] = bias[i·k + p]


def test_depends_on_kept_half_and_context_and_broadcasts():
    conditioner = built()
    randomize_weights(conditioner, scale=0.5)
    kept, context = tf.random.normal([3, 5, 3]), tf.random.normal([5, 4])  # context shared by 3 samples
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([kept, context])
        out = conditioner(kept, context)
    assert out.shape == (3, 5, 2, 5)
    assert np.all(np.abs(tape.gradient(out, kept).numpy()).sum(axis=(0, 1)) > 0)
    assert np.all(np.abs(tape.gradient(out, context).numpy()).sum(axis=0) > 0)


def test_empty_kept_half_and_config_round_trip():
    conditioner = built(num_kept=0, num_transformed=1)
    assert conditioner(tf.zeros([6, 0]), tf.ones([6, 4])).shape == (6, 1, 5)
    clone = CouplingConditioner.from_config(conditioner.get_config())
    clone.build()
    clone.set_weights(conditioner.get_weights())
    kept, context = tf.zeros([2, 0]), tf.ones([2, 4])
    np.testing.assert_allclose(clone(kept, context), conditioner(kept, context))
