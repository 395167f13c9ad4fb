"""QueryBlockedAttention: Keras's attention outputs, its queries in blocks outside training, the scores of
a block (never of the whole T × S) in the graph, the single pass where the scores are small."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from graph_helpers import output_shapes

from tflatent.layers.attention import TransformerBlock
from tflatent.layers.blocked_attention import QueryBlockedAttention

N, T, D, HEADS = 3, 50, 16, 4
LENGTHS = tf.constant([50, 20, 1])
KEY_PADDING = (tf.range(T)[None] < LENGTHS[:, None])[:, None, :]  # [N, 1, T]
CAUSAL = (tf.range(T)[None, :] <= tf.range(T)[:, None])[None]  # [1, T, T]
MASKS = {"none": None, "key padding": KEY_PADDING, "causal": CAUSAL, "both": KEY_PADDING & CAUSAL}


def pair(dtype=None, **kwargs):
    """Keras's layer and a blocked one (blocks of 8 queries) with the same weights, built on [N, T, D]."""
    policy = {} if dtype is None else {"dtype": dtype}
    x = tf.random.stateless_normal([N, T, D], seed=[0, 1])
    reference = keras.layers.MultiHeadAttention(HEADS, D // HEADS, **policy)
    blocked = QueryBlockedAttention(HEADS, D // HEADS, **{"query_block": 8, "max_scores": 1, **kwargs}, **policy)
    reference(x, x)
    blocked(x, x)
    blocked.set_weights(reference.get_weights())
    return reference, blocked, x


@pytest.mark.parametrize("mask", MASKS, ids=list(MASKS))
def test_blocks_give_keras_outputs_eagerly_and_traced(mask):
    reference, blocked, x = pair()
    expected = reference(x, x, attention_mask=MASKS[mask])
    np.testing.assert_array_equal(blocked(x, x, attention_mask=MASKS[mask]), expected)
    dynamic = tf.function(lambda x: blocked(x, x, attention_mask=MASKS[mask]),
                          input_signature=[tf.TensorSpec([None, None, D])])  # the size is chosen at run time
    np.testing.assert_array_equal(dynamic(x), expected)
    compiled = tf.function(lambda x: blocked(x, x, attention_mask=MASKS[mask]), jit_compile=True)
    np.testing.assert_allclose(compiled(x), expected, atol=2e-6)


def test_blocks_give_keras_outputs_under_mixed_precision():
    reference, blocked, x = pair(dtype="mixed_bfloat16")
    expected = reference(x, x, attention_mask=KEY_PADDING & CAUSAL)
    got = blocked(x, x, attention_mask=KEY_PADDING & CAUSAL)
    assert got.dtype == expected.dtype == tf.bfloat16
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("max_scores", [1, 10 ** 9], ids=["blocked", "one pass"])
def test_run_time_choice_takes_either_branch_with_the_same_outputs(max_scores):
    reference, blocked, x = pair(max_scores=max_scores)
    dynamic = tf.function(lambda x: blocked(x, x, attention_mask=KEY_PADDING),
                          input_signature=[tf.TensorSpec([None, None, D])])
    np.testing.assert_array_equal(dynamic(x), reference(x, x, attention_mask=KEY_PADDING))


def score_shapes(layer, steps, training, mask_rows=False):
    """The float tensor shapes of ``layer``'s call traced on [N, steps, D] with static shapes."""
    mask = (tf.range(steps)[None, :] <= tf.range(steps)[:, None])[None] if mask_rows else None
    function = tf.function(lambda x: layer(x, x, attention_mask=mask, training=training))
    return output_shapes(function.get_concrete_function(tf.TensorSpec([N, steps, D])).graph)


@pytest.mark.parametrize("mask_rows", [False, True], ids=["key mask", "causal mask"])
def test_evaluation_never_forms_the_whole_score_matrix(mask_rows):
    steps = 300  # > the block of 8 and not a multiple of it
    _, blocked, _ = pair()
    whole = [s for s in score_shapes(blocked, steps, False, mask_rows) if s.count(steps) >= 2]
    assert not whole, f"evaluation formed T × S scores: {whole}"
    assert (N, HEADS, 8, steps) in score_shapes(blocked, steps, False, mask_rows)
    # Training keeps Keras's single pass (its gradient keeps every block's scores anyway).
    assert (N, HEADS, steps, steps) in score_shapes(blocked, steps, True, mask_rows)


def test_small_scores_take_keras_single_pass():
    _, blocked, _ = pair(max_scores=N * HEADS * T * T)
    assert (N, HEADS, T, T) in score_shapes(blocked, T, False)
    _, blocked, _ = pair(max_scores=N * HEADS * T * T - 1)
    assert (N, HEADS, T, T) not in score_shapes(blocked, T, False)


def test_scores_requested_come_whole():
    reference, blocked, x = pair()
    _, scores = blocked(x, x, attention_mask=CAUSAL, return_attention_scores=True)
    _, expected = reference(x, x, attention_mask=CAUSAL, return_attention_scores=True)
    np.testing.assert_array_equal(scores, expected)


def test_config_round_trips_and_sizes_are_checked():
    layer = QueryBlockedAttention(2, 3, query_block=5, max_scores=7, name="attention")
    again = QueryBlockedAttention.from_config(layer.get_config())
    assert (again.query_block, again.max_scores, again.num_heads, again.name) == (5, 7, 2, "attention")
    with pytest.raises(ValueError, match="query_block=0"):
        QueryBlockedAttention(2, 3, query_block=0)


def test_transformer_blocks_attend_in_blocks():
    assert isinstance(TransformerBlock(8, 2, 12).attention, QueryBlockedAttention)
