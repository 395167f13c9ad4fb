"""PositionFeatures: the reference's one-hot (t, L − 1 − t) pair, the sinusoidal alternative, shifts."""

import numpy as np
import pytest
import tensorflow as tf
from graph_helpers import traced_op_types

from tflatent.layers.position import OneHotPair, PositionFeatures, project


def reference_pos_cond(num_steps, lengths, max_time):
    """The reference's make_pos_cond, batch-major: [B, T, 2·max_T]."""
    out = np.zeros((len(lengths), num_steps, 2 * max_time), np.float32)
    for b, length in enumerate(lengths):
        for t in range(num_steps):
            out[b, t, t] = 1.0
            remaining = length - 1 - t
            out[b, t, max_time + (remaining if remaining >= 0 else max_time - 1)] = 1.0
    return out


def sinusoid(p, size):
    i = np.arange(size // 2)
    angles = p * 10000.0 ** (-2.0 * i / size)
    return np.concatenate([np.sin(angles), np.cos(angles)])


LENGTHS = [5, 3, 1]


def test_onehot_is_the_reference_pos_cond_including_padding():
    features = PositionFeatures(7)(tf.constant(LENGTHS), num_steps=5).numpy()
    np.testing.assert_array_equal(features, reference_pos_cond(5, LENGTHS, 7))


def test_shift_one_is_the_next_steps_features_and_zero_past_each_end():
    layer = PositionFeatures(7)
    shifted = layer(tf.constant(LENGTHS), num_steps=5, shift=1).numpy()
    reference = reference_pos_cond(6, LENGTHS, 7)
    for b, length in enumerate(LENGTHS):
        # The reference shifts the batch tensor; the two agree wherever t + 1 < L.
        np.testing.assert_array_equal(shifted[b, :length - 1], reference[b, 1:length])
        np.testing.assert_array_equal(shifted[b, length - 1:], 0.0)


def test_sinusoidal_encodes_position_and_remaining_length_and_is_zero_at_padding():
    size = 6
    layer = PositionFeatures(7, kind="sinusoidal", size=size)
    assert layer.feature_size == 2 * size
    features = layer(tf.constant(LENGTHS), num_steps=5).numpy()
    shifted = layer(tf.constant(LENGTHS), num_steps=5, shift=1).numpy()
    for b, length in enumerate(LENGTHS):
        for t in range(5):
            expected = (np.concatenate([sinusoid(t, size), sinusoid(length - 1 - t, size)])
                        if t < length else np.zeros(2 * size))
            np.testing.assert_allclose(features[b, t], expected, atol=1e-6)
            expected = (np.concatenate([sinusoid(t + 1, size), sinusoid(length - 2 - t, size)])
                        if t + 1 < length else np.zeros(2 * size))
            np.testing.assert_allclose(shifted[b, t], expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["onehot", "sinusoidal"])
@pytest.mark.parametrize("shift", [0, 1])
def test_valid_steps_do_not_depend_on_padding(kind, shift):
    layer = PositionFeatures(9, kind=kind, size=4)
    short = layer(tf.constant(LENGTHS), num_steps=5, shift=shift).numpy()
    padded = layer(tf.constant(LENGTHS), num_steps=9, shift=shift).numpy()
    np.testing.assert_array_equal(padded[:, :5], short)


def test_feature_size_and_num_steps_default():
    assert PositionFeatures(288).feature_size == 576
    layer = PositionFeatures(10)
    assert layer(tf.constant([4, 2])).shape == (2, 4, 20)
    assert layer(tf.constant([4, 2]), tf.constant(6)).shape == (2, 6, 20)


def test_a_length_beyond_max_time_raises_naming_it_and_the_fix():
    layer = PositionFeatures(5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)length.*\b8\b.*max_time = 5.*data\.max_time"):
        layer(tf.constant([3, 8]), num_steps=8)
    graph = tf.function(lambda lengths: layer(lengths, tf.reduce_max(lengths)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="data.max_time"):
        graph(tf.constant([3, 8]))


@pytest.mark.parametrize("kwargs, message", [
    ({"max_time": 5, "kind": "learned"}, "kind='learned'"),
    ({"max_time": 0}, "max_time=0"),
    ({"max_time": 5, "kind": "sinusoidal", "size": 5}, "size=5"),
])
def test_bad_settings_are_rejected_with_the_config_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PositionFeatures(**kwargs)


def test_config_round_trip():
    layer = PositionFeatures(12, kind="sinusoidal", size=8)
    copy = PositionFeatures.from_config(layer.get_config())
    np.testing.assert_array_equal(copy(tf.constant([3, 2])).numpy(), layer(tf.constant([3, 2])).numpy())


@pytest.mark.parametrize("kind", ["onehot", "sinusoidal"])
@pytest.mark.parametrize("shift", [0, 1])
def test_the_compact_features_product_is_the_dense_product_and_so_is_its_gradient(kind, shift):
    # num_steps = max_time: with shift 1 the last step's position index is max_time, past the one-hot.
    layer = PositionFeatures(7, kind=kind, size=4)
    lengths = tf.constant([7, 3, 1])
    compact = layer.compact(lengths, num_steps=7, shift=shift)
    assert isinstance(compact, OneHotPair) == (kind == "onehot")
    assert tuple(compact.shape) == (3, 7, layer.feature_size)
    kernel = tf.random.stateless_normal([layer.feature_size, 5], seed=[1, 2])
    weights = tf.random.stateless_normal([3, 7, 5], seed=[3, 4])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(kernel)
        ours = project(compact, kernel)
        dense = tf.tensordot(layer(lengths, num_steps=7, shift=shift), kernel, axes=1)
        losses = [tf.reduce_sum(ours * weights), tf.reduce_sum(dense * weights)]
    np.testing.assert_allclose(ours, dense, atol=1e-6)
    gradients = [tf.convert_to_tensor(tape.gradient(loss, kernel)) for loss in losses]
    np.testing.assert_allclose(*gradients, atol=1e-5)
    if kind == "onehot":  # time-major, as the LSTMs read it
        np.testing.assert_allclose(project(compact.transpose([1, 0]), kernel), tf.transpose(dense, [1, 0, 2]),
                                   atol=1e-6)


def test_a_one_hot_pair_is_multiplied_by_gathering_rows_never_as_a_matrix():
    # The [B, T, 2·max_T] matrix is neither built nor multiplied: for music max_T is in the thousands.
    layer = PositionFeatures(3000)
    kernel = tf.Variable(tf.zeros([6000, 8]))

    def product(lengths):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(project(layer.compact(lengths, shift=1), kernel))
        return tape.gradient(loss, kernel)

    for jit_compile in (False, True):
        ops = traced_op_types(product, tf.TensorSpec([None], tf.int32), jit_compile=jit_compile)
        assert ops["ResourceGather"] == 2 and not {"MatMul", "BatchMatMulV2", "SparseMatMul", "OneHot"} & set(ops)
