"""The bidirectional networks of q(z|x) and p(x|z): one interface, BiLSTM or self-attention."""

import numpy as np
import pytest
import tensorflow as tf

from tflatent.layers.lstm import LSTMStack
from tflatent.layers.sequence_network import BidirectionalAttention, BidirectionalLSTM, bidirectional_network

F, C, T = 3, 4, 6
LENGTHS = tf.constant([6, 4, 1])
SIZES = dict(hidden_size=5, num_layers=2, lstm_init="pytorch", lstm_impl="loop", attention_units=8,
             attention_layers=2, attention_heads=2, attention_feed_forward_units=16, dropout=0.0)


def built(kind):
    network = bidirectional_network(kind, **SIZES)
    network.build((None, None, F), (None, None, C))
    return network


def inputs(seed=0):
    return (tf.random.stateless_normal([3, T, F], seed=[seed, 1]),
            tf.random.stateless_normal([3, T, C], seed=[seed, 2]))


def test_the_factory_builds_each_kind_with_its_checkpoint_name_and_refuses_others():
    lstm, attention = built("lstm"), built("transformer")
    assert isinstance(lstm, BidirectionalLSTM) and lstm.name == "bilstm" and lstm.output_size == 10
    assert [cell.name for layer in lstm.cells for cell in layer] == [
        "layer_0_forward", "layer_0_backward", "layer_1_forward", "layer_1_backward"]
    assert isinstance(attention, BidirectionalAttention) and attention.name == "encoder"
    assert attention.output_size == 8 and len(attention.blocks) == 2 and attention.blocks[0].num_heads == 2
    with pytest.raises(ValueError, match="kind='gru' is not one of lstm, transformer"):
        bidirectional_network("gru", **SIZES)


def test_the_bilstm_is_the_bidirectional_stack_with_both_directions_side_by_side():
    network = built("lstm")
    x, context = inputs()
    mask = tf.sequence_mask(LENGTHS, T)
    forward, backward = LSTMStack.call(network, x, mask=mask, context=context)
    h = network(x, mask=mask, context=context)
    np.testing.assert_array_equal(h, tf.concat([forward, backward], axis=-1))
    shifted = network.neighbour_states(h).numpy()  # [h→_{t−1}, h←_{t+1}]
    np.testing.assert_array_equal(shifted[:, 0, :5], 0.0)
    np.testing.assert_array_equal(shifted[:, 1:, :5], forward[:, :-1])
    np.testing.assert_array_equal(shifted[:, :-1, 5:], backward[:, 1:])
    np.testing.assert_array_equal(shifted[:, -1, 5:], 0.0)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_every_valid_output_reads_both_sides_and_no_padding(kind):
    """Bidirectionality by Jacobian: h_t depends on x_s for every valid s, before and after t (and on
    no other sequence); padding outputs are zero and read nothing."""
    network = built(kind)
    x, context = inputs()
    with tf.GradientTape() as tape:
        tape.watch(x)
        h = network(x, mask=tf.sequence_mask(LENGTHS, T), context=context)
    assert h.shape == (3, T, network.output_size)
    jacobian = tf.convert_to_tensor(tape.jacobian(h, x)).numpy()  # [B, T, D, B, T, F]
    for b, length in enumerate(LENGTHS.numpy()):
        for t in range(T):
            for s in range(T):
                reads = np.abs(jacobian[b, t, :, b, s]).max() > 0
                assert reads == (t < length and s < length), (kind, b, t, s)
        assert not np.any(jacobian[b, :, :, [o for o in range(3) if o != b]])
    np.testing.assert_array_equal(tf.where(tf.sequence_mask(LENGTHS, T)[..., None], 0.0, h), 0.0)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_padding_content_and_length_change_no_valid_output(kind):
    network = built(kind)
    x, context = inputs()
    mask = tf.sequence_mask(LENGTHS, T)
    h = network(x, mask=mask, context=context)
    garbage, garbage_context = inputs(seed=5)
    longer = tf.concat([tf.where(mask[..., None], x, 50.0 * garbage), garbage[:, :3]], axis=1)
    longer_context = tf.concat([context, garbage_context[:, :3]], axis=1)
    h_longer = network(longer, mask=tf.sequence_mask(LENGTHS, T + 3), context=longer_context)
    np.testing.assert_allclose(h_longer[:, :T], h, atol=1e-5)
    np.testing.assert_array_equal(h_longer[:, T:], 0.0)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_samples_share_the_context_and_compiled_gives_the_same_outputs(kind):
    network = built(kind)
    x, context = inputs()
    samples = tf.stack([x, inputs(seed=3)[0]])  # [S, B, T, F]
    mask = tf.sequence_mask(LENGTHS, T)
    h = network(samples, mask=mask, context=context)
    for s in range(2):
        np.testing.assert_allclose(h[s], network(samples[s], mask=mask, context=context), atol=1e-5)
    np.testing.assert_allclose(network(samples, mask=mask, context=context, compiled=True), h, atol=1e-5)
