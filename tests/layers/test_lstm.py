"""LSTM / LSTMStack: Keras-equivalent math, PyTorch initialisation, packed-sequence padding, XLA, loop vs cuDNN."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from graph_helpers import loops, traced_op_types

from tflatent.layers.lstm import LSTM, LSTMStack, keras_rnn, resolve_impl
from tflatent.layers.position import PositionFeatures

B, T, F, H = 3, 6, 4, 5
LENGTHS = [6, 3, 1]
IMPLS = ["loop", "cudnn"]  # on this CPU, "cudnn" runs Keras's generic masked loop (what cuDNN computes)


def inputs(*shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 1])


def stack(num_layers=2, bidirectional=True, features=F, context=0, **kwargs):
    layer = LSTMStack(H, num_layers, bidirectional=bidirectional, **kwargs)
    layer.build((None, None, features), (None, None, context) if context else None)
    return layer


def copy_weights(cell, keras_lstm):
    keras_lstm.build((None, None, cell.kernel.shape[0]))
    keras_lstm.set_weights([cell.kernel.numpy(), cell.recurrent_kernel.numpy(), cell.bias.numpy()])
    return keras_lstm


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("backward", [False, True])
def test_one_layer_matches_keras_lstm_with_the_same_weights(backward, impl):
    layer = stack(num_layers=1, impl=impl)
    cell = layer.cells[0][1 if backward else 0]
    reference = copy_weights(cell, keras.layers.LSTM(H, return_sequences=True, go_backwards=backward))
    x = inputs(B, T, F)
    ours = layer(x)[1 if backward else 0].numpy()
    theirs = reference(x).numpy()
    np.testing.assert_allclose(ours, theirs[:, ::-1] if backward else theirs, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_padding_never_leaks_each_sequence_alone_gives_the_same_outputs(impl):
    layer = stack(impl=impl)
    x = inputs(B, T, F)
    forward, backward = layer(x, mask=tf.sequence_mask(LENGTHS, T))
    for b, length in enumerate(LENGTHS):
        alone_forward, alone_backward = layer(x[b:b + 1, :length])
        np.testing.assert_allclose(forward[b, :length], alone_forward[0], atol=1e-6)
        np.testing.assert_allclose(backward[b, :length], alone_backward[0], atol=1e-6)
        np.testing.assert_array_equal(forward[b, length:], 0.0)
        np.testing.assert_array_equal(backward[b, length:], 0.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_garbage_in_padding_changes_nothing_and_gets_no_gradient(impl):
    layer = stack(impl=impl)
    x = inputs(B, T, F)
    mask = tf.sequence_mask(LENGTHS, T)
    garbage = tf.where(mask[..., None], x, 1e3 * inputs(B, T, F, seed=5))
    with tf.GradientTape() as tape:
        tape.watch(garbage)
        outputs = tf.concat(layer(garbage, mask=mask), axis=-1)
        loss = tf.reduce_sum(tf.square(outputs))
    np.testing.assert_allclose(outputs, tf.concat(layer(x, mask=mask), axis=-1), atol=1e-6)
    grad = tape.gradient(loss, garbage)
    assert np.all(grad.numpy()[~mask.numpy()] == 0.0)
    assert np.all(np.abs(grad.numpy()[mask.numpy()]).sum(-1) > 0.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_samples_with_a_shared_context_equal_concatenated_inputs(impl):
    layer = stack(features=F - 2, context=2, impl=impl)
    x, context = inputs(4, B, T, F - 2), inputs(B, T, 2, seed=1)
    mask = tf.sequence_mask(LENGTHS, T)
    forward, backward = layer(x, mask=mask, context=context)
    assert forward.shape == (4, B, T, H)
    for s in range(4):
        alone = layer(tf.concat([x[s], context], axis=-1), mask=mask)
        np.testing.assert_allclose(forward[s], alone[0], atol=1e-6)
        np.testing.assert_allclose(backward[s], alone[1], atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_step_by_step_equals_the_parallel_pass_from_an_initial_state(impl):
    layer = stack(bidirectional=False, features=F - 1, context=1, impl=impl)
    x, context = inputs(B, T, F - 1), inputs(B, T, 1, seed=1)
    state = [(inputs(B, H, seed=2 + i), inputs(B, H, seed=4 + i)) for i in range(2)]
    parallel = layer(x, context=context, initial_state=state).numpy()
    for t in range(T):
        output, state = layer.step(x[:, t], state, context=context[:, t])
        np.testing.assert_allclose(output, parallel[:, t], atol=1e-6)
    zero = layer.zero_state(B)
    assert len(zero) == 2 and zero[0][0].shape == (B, H)


def test_step_with_the_context_projected_once_equals_the_concatenated_step():
    layer = stack(bidirectional=False, features=F - 2, context=2)
    x, context = inputs(B, T, F - 2), inputs(B, T, 2, seed=1)
    context_gates = layer.project_context(context)  # [B, T, 4H], every step at once
    assert context_gates.shape == (B, T, 4 * H)
    state = projected_state = [(inputs(B, H, seed=2 + i), inputs(B, H, seed=4 + i)) for i in range(2)]
    for t in range(T):
        output, state = layer.step(x[:, t], state, context=context[:, t])
        projected, projected_state = layer.step(x[:, t], projected_state, context_gates=context_gates[:, t])
        np.testing.assert_allclose(projected, output, atol=1e-6)


def test_a_step_with_weights_read_before_a_loop_reads_no_variable():
    # A loop reads the weights once (step_weights); a step that read or sliced the kernel itself would,
    # in a differentiated loop, take a full-kernel gradient at every step.
    layer = stack(bidirectional=False, features=F - 2, context=2)
    x, context = inputs(B, F - 2), inputs(B, 2, seed=1)
    state = [(inputs(B, H, seed=2 + i), inputs(B, H, seed=4 + i)) for i in range(2)]
    weights = layer.step_weights(2)  # the context's 2 rows come as context gates
    assert [w.shape for w in weights[0]] == [(F - 2, 4 * H), (H, 4 * H), (4 * H,)]
    assert [w.shape for w in weights[1]] == [(H, 4 * H), (H, 4 * H), (4 * H,)]
    output, _ = layer.step(x, state, context=context)
    prepared, _ = layer.step(x, state, context_gates=layer.project_context(context), weights=weights)
    np.testing.assert_allclose(prepared, output, atol=1e-6)

    def step(x, gates, weights):
        return layer.step(x, state, context_gates=gates, weights=weights)[0]

    ops = traced_op_types(step, x, layer.project_context(context), weights)
    assert ops["ReadVariableOp"] == 0 and ops["StridedSlice"] == 0
    assert ops["Split"] == 2  # each layer's gates, nothing of the kernel


def test_pytorch_initialisation():
    units = 256
    cell = LSTM(units)
    cell.build((None, 64))
    bound = 1.0 / math.sqrt(units)
    kernel, recurrent, bias = cell.kernel.numpy(), cell.recurrent_kernel.numpy(), cell.bias.numpy()
    for weights in (kernel, recurrent):
        assert np.abs(weights).max() <= bound and np.abs(weights).max() > 0.99 * bound
        assert abs(weights.std() - bound / math.sqrt(3)) < 0.02 * bound
    # b_ih + b_hh: triangular on ±2/√H with variance 2/(3H).
    assert np.abs(bias).max() <= 2 * bound and np.abs(bias).max() > bound
    assert abs(bias.std() - bound * math.sqrt(2 / 3)) < 0.05 * bound
    # Separate draws (a Keras initializer reused for two weights would repeat its values).
    assert not np.allclose(kernel, recurrent[:64])


def test_keras_initialisation_has_a_unit_forget_bias():
    cell = LSTM(H, init="keras")
    cell.build((None, F))
    np.testing.assert_array_equal(cell.bias.numpy(), np.repeat([0.0, 1.0, 0.0, 0.0], H))


def test_parameter_count_is_pytorchs_minus_one_bias_per_layer_direction():
    layer = stack(num_layers=2, bidirectional=True, features=F)
    pytorch = 2 * (4 * H * (F + H) + 8 * H) + 2 * (4 * H * (2 * H + H) + 8 * H)
    assert layer.count_params() == pytorch - 4 * (4 * H)


def test_hand_written_gradient_equals_autodiff_of_the_steps():
    cell = LSTM(H)
    cell.build((None, F))
    x, state, weights = inputs(T, 1, B, F), (inputs(B, H, seed=1), inputs(B, H, seed=2)), inputs(T, B, H, seed=3)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, *state])
        ours = tf.reduce_sum(cell.recur(cell.project(x), state) * weights)
        steps, step_state = [], state
        for t in range(T):  # autodiff through LSTM.step, one step at a time
            h, step_state = cell.step(x[t, 0], step_state)
            steps.append(h)
        reference = tf.reduce_sum(tf.stack(steps) * weights)
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    sources = [x, *state, *cell.trainable_variables]  # inputs, h0, c0, kernel, recurrent kernel, bias
    for ours_grad, reference_grad in zip(tape.gradient(ours, sources), tape.gradient(reference, sources)):
        np.testing.assert_allclose(ours_grad, reference_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_one_sequence_multiplies_by_the_transposed_kernel_with_the_batchs_values_and_gradients(jit_compile):
    cell = LSTM(H)
    cell.build((None, F))
    gates = cell.project(inputs(T, 1, B, F))  # [T, B, 4H]

    def each_alone(gates):  # every sequence as a batch of one: static N = 1
        return tf.concat([cell.recur(gates[:, b:b + 1]) for b in range(B)], axis=1)

    def batch(gates):
        return cell.recur(gates)

    for fn in (each_alone, batch):
        assert ("Transpose" in traced_op_types(fn, gates, jit_compile=jit_compile)) == (fn is each_alone)
    results = []
    for fn in (each_alone, batch):
        with tf.GradientTape() as tape:
            tape.watch(gates)
            h = tf.function(fn, jit_compile=jit_compile)(gates)
            loss = tf.reduce_sum(h * inputs(T, B, H, seed=4))
        results.append((h, *tape.gradient(loss, [gates, cell.recurrent_kernel])))
    for alone, together in zip(*results):
        np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["one-hot pair", "dense"])
def test_context_projection_is_the_dense_product(kind):
    cell = LSTM(H)
    cell.build((None, F + 8))
    pair = PositionFeatures(4).compact(tf.constant([3, 2]), num_steps=3)  # index form (gathers) / dense
    context = pair if kind == "one-hot pair" else inputs(2, 3, 8)
    dense_context = pair.to_dense() if kind == "one-hot pair" else context
    weights = inputs(2, 3, 4 * H, seed=4)
    with tf.GradientTape(persistent=True) as tape:
        ours = cell.project_context(context)
        dense = tf.tensordot(dense_context, cell.kernel[F:], axes=1) + cell.bias
        losses = [tf.reduce_sum(ours * weights), tf.reduce_sum(dense * weights)]
    np.testing.assert_allclose(ours, dense, atol=1e-6)
    np.testing.assert_allclose(*(tape.gradient(loss, cell.kernel) for loss in losses), atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_one_hot_pair_context_gives_what_its_dense_features_give(impl):
    position = PositionFeatures(T)
    layer = stack(context=position.feature_size, impl=impl)
    x, mask = inputs(2, B, T, F), tf.sequence_mask(LENGTHS, T)
    pair = position.compact(tf.constant(LENGTHS), num_steps=T, shift=1)
    with tf.GradientTape(persistent=True) as tape:
        ours = layer(x, mask=mask, context=pair)
        dense = layer(x, mask=mask, context=pair.to_dense())
    for a, b in zip(ours, dense):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(tape.gradient(ours, layer.trainable_variables), tape.gradient(dense, layer.trainable_variables)):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_weight_gets_a_finite_nonzero_gradient(impl):
    layer = stack(dropout_between_layers=0.3, context=2, impl=impl)
    x = inputs(2, B, T, F)
    with tf.GradientTape() as tape:
        forward, backward = layer(x, mask=tf.sequence_mask(LENGTHS, T), context=inputs(B, T, 2),
                                  training=True)
        loss = tf.reduce_sum(forward * backward)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert len(grads) == 12
    for variable, grad in zip(layer.trainable_variables, grads):
        assert np.all(np.isfinite(grad.numpy())), variable.path
        assert np.any(grad.numpy() != 0.0), variable.path


@pytest.mark.parametrize("impl", IMPLS)
def test_compiles_under_xla_with_the_same_values_and_gradients(impl):
    layer = stack(context=2, impl=impl)  # cudnn: XLA cannot compile cuDNN; Keras's generic loop instead
    x, context, mask = inputs(B, T, F), inputs(B, T, 2, seed=1), tf.sequence_mask(LENGTHS, T)

    def run(x, context, mask):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.concat(layer(x, mask=mask, context=context), axis=-1)))
        return loss, tape.gradient(loss, layer.trainable_variables)

    eager = run(x, context, mask)
    compiled = tf.function(run, jit_compile=True)(x, context, mask)
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5)
    for a, b in zip(compiled[1], eager[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_compiled_inference_loops_give_the_graph_loops_values(bidirectional):
    layer = stack(bidirectional=bidirectional, context=2)
    x, context, mask = inputs(2, B, T, F), inputs(B, T, 2, seed=1), tf.sequence_mask(LENGTHS, T)
    state = None if bidirectional else [(inputs(2 * B, H, seed=i), inputs(2 * B, H, seed=i + 9))
                                        for i in (3, 4)]

    @tf.function
    def run(compiled):
        return layer(x, mask=mask, context=context, initial_state=state, compiled=compiled)

    for a, b in zip(tf.nest.flatten(run(compiled=True)), tf.nest.flatten(run(compiled=False))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [1, B])
def test_compiled_directions_of_one_sequence_run_one_after_the_other(batch):
    layer = stack(num_layers=1)
    x = inputs(1, batch, T, F)
    mask = tf.sequence_mask(LENGTHS[:batch], T)
    graph = tf.function(lambda x: layer(x, mask=mask, compiled=True)).get_concrete_function(x).graph
    forward, backward = [op for op in graph.get_operations()
                         if op.type in ("PartitionedCall", "StatefulPartitionedCall")
                         and "inference_recurrence" in op.get_attr("f").name]

    def ancestors(op, seen):
        for parent in [tensor.op for tensor in op.inputs] + list(op.control_inputs):
            if parent not in seen:
                seen.add(parent)
                ancestors(parent, seen)
        return seen

    assert (forward in ancestors(backward, set())) == (batch == 1)
    for a, b in zip(layer(x, mask=mask, compiled=True), layer(x, mask=mask)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="init='torch'"):
        LSTMStack(H, init="torch")
    layer = stack()
    left_padded = tf.constant([[False, True, True, True, True, True]] * B)
    with pytest.raises(tf.errors.InvalidArgumentError, match="right-padded"):
        layer(inputs(B, T, F), mask=left_padded)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(inputs(B, F), layer.zero_state(B))
    with pytest.raises(ValueError, match="unidirectional"):
        layer(inputs(B, T, F), initial_state=[(tf.zeros([B, H]), tf.zeros([B, H]))] * 2)


def test_config_round_trip():
    layer = stack(num_layers=2, bidirectional=True, dropout_between_layers=0.1, init="keras", impl="cudnn")
    copy = LSTMStack.from_config(layer.get_config())
    assert (copy.units, copy.num_layers, copy.bidirectional, copy.dropout_between_layers, copy.init,
            copy.impl) == (H, 2, True, 0.1, "keras", "cudnn")


# ---------------------------------------------------------------- loop vs cuDNN (model.lstm_impl)
def twin_stacks(bidirectional, context):
    """A "loop" and a "cudnn" stack over the same weights."""
    loop = stack(bidirectional=bidirectional, context=context, impl="loop")
    cudnn = stack(bidirectional=bidirectional, context=context, impl="cudnn")
    cudnn.set_weights(loop.get_weights())
    return loop, cudnn


@pytest.mark.parametrize("bidirectional", [True, False])
def test_loop_and_cudnn_give_the_same_outputs_and_gradients(bidirectional):
    """With samples, a shared context, unequal lengths (one of them 0) and, one-way, an initial state."""
    loop, cudnn = twin_stacks(bidirectional, context=2)
    x, context = inputs(2, B, T, F), inputs(B, T, 2, seed=1)
    mask = tf.sequence_mask([6, 2, 0], T)
    state = None if bidirectional else [(inputs(2 * B, H, seed=2 + i), inputs(2 * B, H, seed=4 + i))
                                        for i in range(2)]
    weights = inputs(2, B, T, H * (2 if bidirectional else 1), seed=6)
    results = []
    for layer in (loop, cudnn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, mask=mask, context=context, initial_state=state, training=True)
            outputs = tf.concat(outputs, axis=-1) if bidirectional else outputs
            loss = tf.reduce_sum(outputs * weights)
        results.append((outputs, tape.gradient(loss, [x, *layer.trainable_variables])))
    (loop_outputs, loop_grads), (cudnn_outputs, cudnn_grads) = results
    np.testing.assert_allclose(cudnn_outputs, loop_outputs, rtol=1e-5, atol=1e-6)
    assert np.all(cudnn_outputs.numpy()[:, 2] == 0.0)  # the empty sequence
    assert len(cudnn_grads) == len(loop_grads) == 1 + 3 * len(loop.cells) * len(loop.cells[0])
    for a, b in zip(cudnn_grads, loop_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_cudnn_traced_for_a_gpu_is_one_cudnn_op_per_layer_direction_and_no_loop(bidirectional):
    _, cudnn = twin_stacks(bidirectional, context=2)
    directions = 2 if bidirectional else 1

    def loss_and_gradients(x, context, lengths):
        with tf.GradientTape() as tape:
            outputs = cudnn(x, mask=tf.sequence_mask(lengths, tf.shape(x)[2]), context=context, training=True)
            loss = tf.reduce_sum(tf.concat(outputs, axis=-1) if bidirectional else outputs)
        return tape.gradient(loss, cudnn.trainable_variables)

    specs = (tf.TensorSpec([2, None, None, F]), tf.TensorSpec([None, None, 2]), tf.TensorSpec([None], tf.int32))
    gpu = traced_op_types(loss_and_gradients, *specs, device="/GPU:0")
    assert gpu["CudnnRNNV3"] == gpu["CudnnRNNBackpropV3"] == 2 * directions
    assert loops(gpu) == 0
    cpu = traced_op_types(loss_and_gradients, *specs)  # Keras's generic loop: forward and backward
    assert "CudnnRNNV3" not in cpu and loops(cpu) == 2 * 2 * directions


def test_every_layer_direction_meets_kerass_cudnn_conditions():
    """Keras's own check of an LSTM's arguments (``cudnn_ok`` without its GPU test) on each cell."""
    layer = stack(impl="cudnn")
    assert layer.implementation == "cudnn"
    for cell in (cell for directions in layer.cells for cell in directions):
        assert keras_rnn._do_lstm_arguments_support_cudnn(
            activation=cell.activation, recurrent_activation=cell.recurrent_activation, unroll=cell.unroll,
            use_bias=cell.use_bias)
        assert not cell.recurrent_dropout  # keras.layers.LSTM's other condition


def test_auto_is_the_loop_without_a_gpu_and_bad_settings_name_the_config_field():
    assert not tf.config.get_visible_devices("GPU")  # this test describes a CPU-only machine
    assert resolve_impl("auto") == "loop" and stack(impl="auto").implementation == "loop"
    assert resolve_impl("cudnn") == "cudnn" and resolve_impl("loop") == "loop"
    with pytest.raises(ValueError, match="model.lstm_impl"):
        LSTMStack(H, impl="cuda")


