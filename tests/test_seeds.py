"""stateless_seed: None draws fresh seeds, an int is reproducible, a [2] tensor passes through; the derived
per-replica step seeds and per-sequence seeds."""

import numpy as np
import tensorflow as tf

from tflatent.seeds import replica_step_seed, sequence_seeds, stateless_seed


def test_int_seeds_are_reproducible_and_distinct():
    np.testing.assert_array_equal(stateless_seed(7), [7, 0])
    assert not np.array_equal(stateless_seed(7), stateless_seed(8))


def test_none_draws_a_fresh_seed_each_call_also_inside_tf_function():
    assert not np.array_equal(stateless_seed(), stateless_seed())
    draw = tf.function(lambda: stateless_seed())
    assert not np.array_equal(draw(), draw())


def test_a_tensor_seed_passes_through_as_int32():
    seed = stateless_seed(tf.constant([3, 4], tf.int64))
    assert seed.dtype == tf.int32
    np.testing.assert_array_equal(seed, [3, 4])


def test_step_seeds_repeat_and_differ_by_step():
    np.testing.assert_array_equal(replica_step_seed(3, 5), replica_step_seed(3, tf.constant(5, tf.int64)))
    assert not np.array_equal(replica_step_seed(3, 5), replica_step_seed(3, 6))
    assert not np.array_equal(replica_step_seed(3, 5), replica_step_seed(4, 5))


def test_sequence_seeds_depend_on_the_sequence_only():
    text = tf.constant([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9], [9, 6, 7, 0, 0]])
    seeds = sequence_seeds(1, text, tf.constant([3, 5, 3])).numpy()
    assert len({tuple(s) for s in seeds}) == 3  # content and length both count
    alone = sequence_seeds(1, tf.constant([[5, 6, 7, 4]]), tf.constant([3])).numpy()  # other padding, batch
    np.testing.assert_array_equal(alone[0], seeds[0])
    assert not np.array_equal(sequence_seeds(2, text[:1], tf.constant([3])).numpy()[0], seeds[0])
    frames = tf.cast(tf.random.stateless_uniform([2, 6, 88], seed=[0, 1]) < 0.2, tf.float32)
    music = sequence_seeds(1, frames, tf.constant([4, 6])).numpy()
    np.testing.assert_array_equal(sequence_seeds(1, frames[1:, :6], tf.constant([6])).numpy()[0], music[1])
    np.testing.assert_array_equal(sequence_seeds(1, frames[:1, :4], tf.constant([4])).numpy()[0], music[0])


def test_sequence_seeds_take_numpy_arrays_as_tensors():
    x = np.array([[3, 4, 0], [5, 0, 0]], np.int32)
    lengths = np.array([2, 1], np.int32)
    np.testing.assert_array_equal(sequence_seeds(7, x, lengths),
                                  sequence_seeds(7, tf.constant(x), tf.constant(lengths)))


def test_sequence_seeds_are_tensorflows_fold_in_of_each_key_also_for_an_empty_batch_under_xla():
    """Vectorised, they equal ``stateless_fold_in(seed, key_b)`` sequence by sequence (the seeds, hence the
    noise, of earlier versions); a replica's share of an uneven batch can be empty, which a ``map_fn``
    under XLA refused ("Slice dim size 1 greater than dynamic slice dimension: 0")."""
    x = tf.constant([[5, 6, 7, 0], [5, 6, 7, 8]])
    lengths = tf.constant([3, 4])
    seeds = sequence_seeds(11, x, lengths).numpy()
    for b in range(2):
        key = sequence_seeds(11, x[b:b + 1], lengths[b:b + 1]).numpy()[0, 1]
        np.testing.assert_array_equal(seeds[b], tf.random.experimental.stateless_fold_in(stateless_seed(11), key))
    compiled = tf.function(lambda x, lengths: sequence_seeds(11, x, lengths), jit_compile=True)
    np.testing.assert_array_equal(compiled(x, lengths), seeds)
    assert compiled(x[:0], lengths[:0]).shape == (0, 2)
