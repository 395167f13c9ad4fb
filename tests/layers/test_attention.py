"""AttentionEncoder / CausalAttentionContext: causality and padding by Jacobian structure, the cached step
against the parallel pass (values and gradients, eager and under XLA), sample axis, weights, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from graph_helpers import loop_accumulators

from tflatent.layers.attention import AttentionEncoder, CausalAttentionContext, TransformerBlock, cached_attention
from tflatent.layers.position import PositionFeatures

B, T, F, C, D = 3, 6, 4, 5, 8
LENGTHS = [6, 3, 1]
KINDS = (AttentionEncoder, CausalAttentionContext)


def inputs(*shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 1])


def network(kind, context=C, features=F, **kwargs):
    kwargs = {"num_layers": 2, "num_heads": 2, "feed_forward_units": 12, **kwargs}
    layer = kind(D, **kwargs)
    layer.build((None, None, features), (None, None, context) if context else None)
    return layer


def dependence(outputs_fn, x):
    """|∂ (w · outputs[b, t]) / ∂ x[b, s]| summed over features, for a random w: [B, T (outputs), T (inputs)].

    With a random w this is zero exactly where the Jacobian block is zero (almost surely); one gradient
    per output step is much faster than a full Jacobian.
    """
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        outputs = outputs_fn(x)
        weighted = outputs * inputs(*outputs.shape, seed=7)
        per_step = [tf.reduce_sum(weighted[:, t]) for t in range(outputs.shape[1])]
    found = [tf.reduce_sum(tf.abs(tape.gradient(total, x)), axis=-1) for total in per_step]  # each [B, T]
    return tf.stack(found, axis=1).numpy()


def run_steps(layer, x, context):
    """The cached step path over x [N, T, F] with context [N, T, C], eagerly: [N, T, d]."""
    cache = layer.initial_cache(x.shape[0], x.shape[1])
    previous, outputs = tf.zeros_like(x[:, 0]), []
    for t in range(x.shape[1]):
        h, cache = layer.step(previous, cache, context=context[:, t])
        outputs.append(h)
        previous = x[:, t]
    return tf.stack(outputs, axis=1)


def step_loop(layer, x, projection, prepared=True):
    """The cached step path as a tf.while_loop over a static T, as the prior runs it: with ``prepared``
    the weights are read once before the loop and the final cache is bound for the gradient
    (``finish_steps``); without, every step reads its weights and its gradient its own cache."""
    num_steps = x.shape[1]
    x_tm = tf.transpose(x, [1, 0, 2])
    projection_tm = tf.transpose(projection, [1, 0, 2])
    weights = layer.step_weights() if prepared else None

    def body(t, previous, cache, outputs):
        h, cache = layer.step(previous, cache, context_projection=projection_tm[t], weights=weights)
        return t + 1, x_tm[t], cache, outputs.write(t, h)

    _, _, cache, outputs = tf.while_loop(
        lambda t, *_: t < num_steps, body,
        (tf.constant(0), tf.zeros_like(x_tm[0]), layer.initial_cache(x.shape[0], num_steps),
         tf.TensorArray(x.dtype, size=num_steps)),
        maximum_iterations=num_steps)
    if prepared:
        layer.finish_steps(weights, cache)
    return tf.transpose(outputs.stack(), [1, 0, 2])


# ------------------------------------------------------------------ dependence structure
def test_causal_output_at_t_depends_on_inputs_before_t_only_and_on_context_up_to_t():
    layer = network(CausalAttentionContext)
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    on_inputs = dependence(lambda x: layer(x, context=context), x)
    on_context = dependence(lambda c: layer(x, context=c), context)
    before = np.tril(np.ones((T, T), bool), k=-1)  # s < t
    up_to = np.tril(np.ones((T, T), bool))  # s ≤ t
    for b in range(B):
        assert np.all(on_inputs[b][~before] == 0.0) and np.all(on_inputs[b][before] > 0.0)
        assert np.all(on_context[b][~up_to] == 0.0) and np.all(on_context[b][up_to] > 0.0)


def test_encoder_output_depends_on_every_valid_position_and_on_no_padding():
    layer = network(AttentionEncoder)
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    mask = tf.sequence_mask(LENGTHS, T)
    on_inputs = dependence(lambda x: layer(x, mask=mask, context=context), x)
    on_context = dependence(lambda c: layer(x, mask=mask, context=c), context)
    for b, length in enumerate(LENGTHS):
        for found in (on_inputs[b], on_context[b]):
            assert np.all(found[:length, :length] > 0.0)
            assert np.all(found[:, length:] == 0.0)  # padding reaches no output
            assert np.all(found[length:] == 0.0)  # outputs at padding are constant zeros


@pytest.mark.parametrize("kind", KINDS)
def test_appended_padding_with_garbage_changes_no_valid_output(kind):
    layer = network(kind)
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    mask = tf.sequence_mask(LENGTHS, T)
    outputs = layer(x, mask=mask, context=context).numpy()
    garbage = 1e3 * inputs(B, T + 3, F + C, seed=2)
    padded_x = tf.where(mask[..., None], x, garbage[:, :T, :F])
    padded_x = tf.concat([padded_x, garbage[:, T:, :F]], axis=1)
    padded_context = tf.concat([context, garbage[:, T:, F:]], axis=1)
    padded = layer(padded_x, mask=tf.sequence_mask(LENGTHS, T + 3), context=padded_context).numpy()
    for b, length in enumerate(LENGTHS):
        np.testing.assert_allclose(padded[b, :length], outputs[b, :length], atol=1e-5)
        alone = layer(x[b:b + 1, :length], context=context[b:b + 1, :length]).numpy()
        np.testing.assert_allclose(outputs[b, :length], alone[0], atol=1e-5)
        np.testing.assert_array_equal(padded[b, length:], 0.0)


# ------------------------------------------------------------------ the cached step path
def test_cached_steps_equal_the_parallel_pass():
    layer = network(CausalAttentionContext)
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    np.testing.assert_allclose(run_steps(layer, x, context), layer(x, context=context), atol=1e-5)


def test_cached_step_loop_compiles_with_xla_and_equals_the_parallel_pass():
    layer = network(CausalAttentionContext)
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    projection = layer.project_context(context)  # for all steps at once, as a sampler would
    compiled = tf.function(lambda x, p: step_loop(layer, x, p), jit_compile=True)
    np.testing.assert_allclose(compiled(x, projection), layer(x, context=context), atol=1e-5)
    parallel = tf.function(lambda x, c: layer(x, context=c), jit_compile=True)
    np.testing.assert_allclose(parallel(x, context), layer(x, context=context), atol=1e-5)


@pytest.mark.parametrize("prepared", [True, False], ids=["final cache", "own caches"])
def test_gradients_through_the_step_loop_equal_those_of_the_parallel_pass(prepared):
    """The IAF density runs the context step by step in training: its gradients must be the parallel ones,
    whether the attention reads' gradients read the loop's final cache or each step's own."""
    layer = network(CausalAttentionContext)
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    weights = inputs(B, T, D, seed=3)
    sources = [x, *layer.trainable_variables]
    grads = []
    for outputs_fn in (lambda: layer(x, context=context),
                       lambda: step_loop(layer, x, layer.project_context(context), prepared)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(weights * outputs_fn())
        grads.append(tape.gradient(loss, sources))
    for source, parallel, stepped in zip(["x"] + [v.path for v in layer.trainable_variables], *grads):
        np.testing.assert_allclose(stepped, parallel, atol=1e-4, err_msg=source)


def test_cached_attention_gradient_reads_rows_up_to_t_of_the_final_cache_only():
    """∂(q, K, V) of one attention read from the final cache (rows > t hold later steps' keys) equal
    autodiff of softmax(q·K/√d_k) V over rows ≤ t."""
    N, heads, key_dim, index = 2, 3, 4, 2
    query, keys, values = (inputs(N, heads, key_dim, seed=11), inputs(N, heads, T, key_dim, seed=12),
                           inputs(N, heads, T, key_dim, seed=13))
    later = tf.range(T)[:, None] > index
    final = (tf.where(later, inputs(N, heads, T, key_dim, seed=14), keys),
             tf.where(later, inputs(N, heads, T, key_dim, seed=15), values))
    upstream = inputs(N, heads, key_dim, seed=16)

    def reference(q, k, v):
        scores = tf.einsum("nhd,nhtd->nht", q, k[:, :, :index + 1]) / np.sqrt(key_dim)
        return tf.einsum("nht,nhtd->nhd", tf.nn.softmax(scores), v[:, :, :index + 1])

    expected = []
    for function in (reference, lambda q, k, v: cached_attention(q, k, v, tf.constant(index), lambda: final)):
        with tf.GradientTape() as tape:
            tape.watch([query, keys, values])
            out = function(query, keys, values)
            loss = tf.reduce_sum(upstream * out)
        expected.append((out, *tape.gradient(loss, [query, keys, values])))
    for want, got in zip(*expected):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_differentiated_step_loop_keeps_no_cache_per_step():
    """TensorFlow's gradient of a loop keeps, per step, what the step's gradient reads: with the final
    cache bound, no [N, n, T_max, d_k] cache is among them (O(T²) memory otherwise)."""
    layer = network(CausalAttentionContext)
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    cache_shape = (B, layer.num_heads, T, D // layer.num_heads)
    for prepared in (False, True):
        @tf.function
        def gradient(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(step_loop(layer, x, layer.project_context(context), prepared))
            return tape.gradient(loss, [x, *layer.trainable_variables])

        kept = loop_accumulators(gradient.get_concrete_function(x).graph)
        assert (cache_shape in kept) != prepared, kept


def test_steps_without_a_context_equal_the_parallel_pass():
    layer = network(CausalAttentionContext, context=0)
    x = inputs(B, T, F)
    cache, previous, outputs = layer.initial_cache(B, T), tf.zeros([B, F]), []
    for t in range(T):
        h, cache = layer.step(previous, cache)
        outputs.append(h)
        previous = x[:, t]
    np.testing.assert_allclose(tf.stack(outputs, axis=1), layer(x), atol=1e-5)


def test_position_features_as_context_give_the_prior_lstm_dependence():
    """With pos[t] (shift 0) as context, h_t sees pos_0..pos_t as the LSTM's h̃_t does, and T through it."""
    position = PositionFeatures(T)
    layer = network(CausalAttentionContext, context=position.feature_size)
    x = inputs(B, T, F)
    lengths = tf.constant(LENGTHS)
    outputs = layer(x, mask=tf.sequence_mask(lengths, T), context=position(lengths, num_steps=T)).numpy()
    stepped = run_steps(layer, x, position(lengths, num_steps=T)).numpy()
    for b, length in enumerate(LENGTHS):
        np.testing.assert_allclose(stepped[b, :length], outputs[b, :length], atol=1e-5)
    longer = layer(x[:1], context=position(tf.constant([T + 0]), num_steps=T)).numpy()
    shorter = layer(x[:1], context=position(tf.constant([T - 1]), num_steps=T)).numpy()
    assert np.abs(longer[0, 0] - shorter[0, 0]).max() > 1e-3  # h_0 already knows the length


# ------------------------------------------------------------------ contract of the LSTMs
@pytest.mark.parametrize("kind", KINDS)
def test_samples_with_a_shared_context_equal_one_pass_per_sample(kind):
    layer = network(kind)
    x, context = inputs(4, B, T, F), inputs(B, T, C, seed=1)
    mask = tf.sequence_mask(LENGTHS, T)
    outputs = layer(x, mask=mask, context=context)
    assert outputs.shape == (4, B, T, D)
    for s in range(4):
        np.testing.assert_allclose(outputs[s], layer(x[s], mask=mask, context=context), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_every_weight_gets_a_gradient(kind):
    layer = network(kind)
    x, context = inputs(2, B, T, F), inputs(B, T, C, seed=1)
    with tf.GradientTape() as tape:
        outputs = layer(x, mask=tf.sequence_mask(LENGTHS, T), context=context)
        loss = tf.reduce_sum(inputs(2, B, T, D, seed=3) * outputs)
    grads = tape.gradient(loss, layer.trainable_variables)
    # input and context kernels, bias; 16 per block; the final LN; the start vector
    assert len(grads) == 3 + 2 * 16 + 2 + (kind is CausalAttentionContext)
    for variable, grad in zip(layer.trainable_variables, grads):
        assert grad is not None and np.abs(grad.numpy()).max() > 0.0, variable.path


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trips_and_weights_are_built_eagerly(kind):
    layer = network(kind, dropout=0.1, num_layers=3)
    assert layer.built and len(layer.weights) == 3 + 3 * 16 + 2 + (kind is CausalAttentionContext)
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(copy) is kind and copy.get_config() == layer.get_config()
    assert copy.built and len(copy.weights) == len(layer.weights)  # rebuilt from both shapes
    copy.set_weights(layer.get_weights())
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    np.testing.assert_array_equal(copy(x, context=context), layer(x, context=context))
    block = TransformerBlock(D, 2, 12, dropout=0.1)
    assert TransformerBlock.from_config(block.get_config()).get_config() == block.get_config()


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_acts_only_in_training(kind):
    layer = network(kind, dropout=0.5)
    x, context = inputs(B, T, F), inputs(B, T, C, seed=1)
    np.testing.assert_array_equal(layer(x, context=context), layer(x, context=context))
    assert np.abs(layer(x, context=context, training=True) - layer(x, context=context)).max() > 1e-3


def test_bad_sizes_and_a_missing_context_are_one_clear_error():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        AttentionEncoder(10, num_heads=3)
    layer = network(AttentionEncoder)
    with pytest.raises(ValueError, match="built with a context but called without one"):
        layer(inputs(B, T, F))
