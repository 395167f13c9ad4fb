"""MADE: autoregressive structure by Jacobian, degrees, layout, initialisation, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import randomize_weights

from tflatent.layers import MADE

D, K, C, UNITS = 6, 3, 4, 16


def built_made(order, dropout=0.0, context_dim=C):
    made = MADE(order, num_params=K, context_dim=context_dim, hidden_units=UNITS, dropout=dropout)
    made.build()
    return made


def jacobians(made, x, context):
    """∂out/∂x `[B, D, K, D]` and ∂out/∂context `[B, D, K, C]`."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, context])
        out = made(x, made.project_context(context))
    return tape.batch_jacobian(out, x), tape.batch_jacobian(out, context)


@pytest.mark.parametrize("order", [list(range(1, D + 1)), list(range(D, 0, -1)), [3, 1, 6, 2, 5, 4]])
def test_output_of_dim_i_depends_only_on_lower_orders_and_the_context(order):
    made = built_made(order)
    randomize_weights(made, scale=0.5)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(64, D)), tf.float32)
    context = tf.constant(rng.normal(size=(64, C)), tf.float32)
    d_x, d_context = jacobians(made, x, context)
    reach = np.abs(d_x.numpy()).sum(axis=(0, 2)) > 0  # [output dim i, input dim j]
    order = np.asarray(order)
    np.testing.assert_array_equal(reach, order[None, :] < order[:, None])
    assert (np.abs(d_context.numpy()).sum(axis=0) > 0).all()


def test_degrees_and_layout_at_reference_size():
    made = MADE(list(range(1, 51)), num_params=5, context_dim=500, hidden_units=100)
    made.build()
    assert made.count_params() == 90_450  # docs/reference.md §7.3: 90.4k per MADE layer (dense count)
    hidden_degrees = np.concatenate([np.arange(50), np.arange(50)])
    # unit j of a hidden layer sees unit i of the previous one iff degree_j >= degree_i
    np.testing.assert_array_equal(made.hidden[1].kernel_mask,
                                  hidden_degrees[None, :] >= hidden_degrees[:, None])
    # the data input of order o reaches the hidden units of degree o..49, twice
    np.testing.assert_array_equal(made.hidden[0].kernel_mask.sum(axis=1), 2 * (49 - np.arange(50)))


def test_outputs_are_param_major_then_transposed_to_dim_major():
    made = built_made(list(range(1, D + 1)))
    made.output_layer.kernel.assign(tf.zeros_like(made.output_layer.kernel))
    made.output_layer.bias.assign(tf.range(K * D, dtype=tf.float32))
    out = made(tf.zeros([2, D]), made.project_context(tf.zeros([2, C])))
    assert out.shape == (2, D, K)
    np.testing.assert_array_equal(out[0], np.arange(K * D).reshape(K, D).T)  # out[i, p] = bias[p·D + i]


def test_initialisation_follows_the_reference():
    made = MADE(list(range(1, D + 1)), num_params=K, context_dim=C, hidden_units=UNITS)
    made.build()
    for layer in made.hidden:
        assert np.abs(layer.kernel.numpy()).max() <= 1e-3 and not layer.bias.numpy().any()
    assert np.abs(made.context_projection.kernel.numpy()).max() <= 1e-3
    bound = 1 / np.sqrt(UNITS)
    for weight in (made.output_layer.kernel, made.output_layer.bias):
        assert np.abs(weight.numpy()).max() <= bound and np.abs(weight.numpy()).max() > bound / 2


def test_projected_context_broadcasts_over_leading_dims_and_context_dim_zero_works():
    made = built_made(list(range(1, D + 1)))
    projected = made.project_context(tf.ones([5, C]))  # computed once, shared by 3 samples
    assert made(tf.ones([3, 5, D]), projected).shape == (3, 5, D, K)
    no_context = built_made(list(range(1, D + 1)), context_dim=0)
    assert no_context(tf.ones([5, D]), no_context.project_context(tf.ones([5, 0]))).shape == (5, D, K)


def test_dropout_only_when_training():
    made = built_made(list(range(1, D + 1)), dropout=0.5)
    randomize_weights(made, scale=0.5)
    x, context = tf.ones([4, D]), tf.ones([4, C])
    inference = [made(x, made.project_context(context)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    training = made(x, made.project_context(context, training=True), training=True)
    assert not np.allclose(training, inference[0])


def test_config_round_trip():
    made = built_made([2, 1, 3, 4, 6, 5], dropout=0.1)
    clone = MADE.from_config(made.get_config())
    clone.build()
    clone.set_weights(made.get_weights())
    x, context = tf.random.normal([3, D]), tf.random.normal([3, C])
    np.testing.assert_allclose(clone(x, clone.project_context(context)),
                               made(x, made.project_context(context)))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(made))
    assert restored.input_order.tolist() == [2, 1, 3, 4, 6, 5]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="permutation"):
        MADE([1, 2, 2], num_params=K)
    with pytest.raises(ValueError, match="hidden_units"):
        MADE(list(range(1, D + 1)), num_params=K, hidden_units=D - 1)


def test_weights_are_drawn_independently():
    # A shared Keras initializer object would give the hidden layers and the output overlapping draws.
    made = MADE(np.arange(1, 9), num_params=5, context_dim=8, hidden_layers=2, hidden_units=16)
    made.build()
    hidden = [w.numpy() for w in made.weights if w.shape == (16, 16)]
    context = [w.numpy() for w in made.weights if w.shape == (8, 16)]
    assert len(hidden) == 1 and len(context) == 2
    first = [w.ravel()[:8] for w in hidden + context]
    for i in range(len(first)):
        for j in range(i + 1, len(first)):
            assert not np.isclose(first[i], first[j]).any()
