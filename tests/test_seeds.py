"""stateless_seed: None draws fresh seeds, an int is reproducible, a [2] tensor passes through."""

import numpy as np
import tensorflow as tf

from tflatent.seeds import stateless_seed


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
