"""The prior's time context h̃_t = g(y_<t, pos_≤t), LSTM and causal self-attention: the step-by-step path
equals the parallel pass, causality by Jacobian structure, length conditioning, the choice of network."""

import numpy as np
import pytest
import tensorflow as tf
from flow_helpers import randomize_weights
from graph_helpers import traced_op_types

from tflatent.layers.position import PositionFeatures
from tflatent.priors.time_context import AttentionTimeContext, LSTMTimeContext, make_time_context

H, MAX_T, T = 4, 9, 6
LENGTHS = tf.constant([6, 2, 4])


def make_context(network):
    tf.keras.utils.set_random_seed(0)
    context = make_time_context(network, PositionFeatures(MAX_T), lstm_units=8, lstm_layers=2, attention_units=8,
                                attention_layers=2, attention_heads=2, attention_feed_forward_units=12)
    context.build(H)
    for layer in context.layers().values():
        randomize_weights(layer, scale=0.3)
    return context


def stepped(context, y, lengths, prepared=False):
    """h̃ by ``step`` over t, eagerly: y [S, N, T, H] → [S, N, T, U]; ``prepared``: with ``step_weights``."""
    num_samples, batch = y.shape[:2]
    rows = tf.reshape(y, [-1, T, H])
    inputs = tf.tile(context.step_inputs(lengths, T), [num_samples, 1, 1])  # [S·N, T, K]
    state, previous, outputs = context.initial_state(lengths, num_samples, T), tf.zeros([rows.shape[0], H]), []
    for t in range(T):
        h, state = context.step(tf.constant(t), previous, inputs[:, t], state,
                                weights=context.step_weights() if prepared else None)
        outputs.append(h)
        previous = rows[:, t]
    return tf.reshape(tf.stack(outputs, axis=1), [num_samples, batch, T, -1])


@pytest.mark.parametrize("prepared", [False, True])
@pytest.mark.parametrize("network", ["lstm", "transformer"])
def test_steps_equal_the_parallel_pass_on_every_valid_step(network, prepared):
    context = make_context(network)
    y = tf.random.stateless_normal([2, 3, T, H], seed=[1, 2])  # 2 samples of each of 3 sequences
    parallel, steps = context.parallel(y, LENGTHS).numpy(), stepped(context, y, LENGTHS, prepared).numpy()
    assert parallel.shape == (2, 3, T, context.units)
    for b, length in enumerate(LENGTHS.numpy()):
        np.testing.assert_allclose(steps[:, b, :length], parallel[:, b, :length], atol=1e-5)


@pytest.mark.parametrize("network", ["lstm", "transformer"])
def test_a_step_given_its_weights_prepares_none_of_them(network):
    # What a loop prepares once (step_weights) a step must not prepare again: in the IAF density's
    # differentiated loop, a slice of the LSTM's kernel (its one-hot rows included) or the attention's
    # W_QKV concatenation would take a full-size gradient at every step.
    context = make_context(network)
    rows = 6
    inputs = tf.tile(context.step_inputs(LENGTHS, T), [2, 1, 1])[:, 2]
    state = context.initial_state(LENGTHS, 2, T)

    def step(y_prev, step_input, weights):
        return context.step(tf.constant(2), y_prev, step_input, state, weights=weights)[0]

    ops = traced_op_types(step, tf.zeros([rows, H]), inputs, context.step_weights())
    unprepared = traced_op_types(lambda y_prev, step_input: step(y_prev, step_input, None), tf.zeros([rows, H]),
                                 inputs)
    if network == "lstm":  # every weight the step reads is prepared
        assert ops["ReadVariableOp"] == ops["StridedSlice"] == ops["SplitV"] == 0 < unprepared["SplitV"]
    else:  # W_x, s, and each block's W_QKV (a concatenation), b_QKV, W_O, b_O, W_1, b_1, W_2, b_2; the LNs
        # are layer calls (their scales and offsets, vectors, are all that a step still reads)
        assert ops["ConcatV2"] == 0 < unprepared["ConcatV2"]
        assert ops["ReadVariableOp"] == unprepared["ReadVariableOp"] - 2 - 2 * 12


@pytest.mark.parametrize("network", ["lstm", "transformer"])
def test_context_at_t_depends_on_y_before_t_only_and_on_the_length(network):
    context = make_context(network)
    y = tf.random.stateless_normal([1, 1, T, H], seed=[3, 4])
    lengths = tf.constant([T])
    with tf.GradientTape(persistent=True) as tape:  # one gradient per h̃_t (jacobian's pfor crashes on einsums)
        tape.watch(y)
        h = context.parallel(y, lengths)[0, 0]  # [T, U]
        weighted = h * tf.random.stateless_normal(h.shape, seed=[5, 6])
        per_step = [tf.reduce_sum(weighted[t]) for t in range(T)]
    found = np.stack([np.abs(tape.gradient(total, y)[0, 0].numpy()).sum(axis=-1) for total in per_step])
    before = np.tril(np.ones((T, T), bool), k=-1)  # s < t
    assert np.all(found[~before] == 0.0) and np.all(found[before] > 0.0)
    shorter = context.parallel(y, tf.constant([T - 1]))[0, 0]
    assert np.abs(h[0] - shorter[0]).max() > 1e-3  # h̃_0 already knows T


def test_the_networks_and_a_bad_name():
    assert isinstance(make_context("lstm"), LSTMTimeContext)
    assert isinstance(make_context("transformer"), AttentionTimeContext)
    assert set(make_context("transformer").layers()) == {"attention"}
    with pytest.raises(ValueError, match="model.prior_network"):
        make_time_context("gru", PositionFeatures(MAX_T))
