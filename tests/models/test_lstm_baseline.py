"""LSTMBaseline: the reference's shifted T-conditioning, exact likelihood, objective, sampling, JSB training."""

import math

import keras
import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from graph_helpers import loops, traced_op_types

from tflatent.models.lstm_baseline import LSTMBaseline

V, E, H, MAX_T = 5, 6, 8, 10
X = tf.constant([[1, 2, 3, 4, 2], [3, 4, 1, 0, 0], [2, 0, 0, 0, 0]])
LENGTHS = tf.constant([5, 3, 1])
LOG_P_T = np.r_[-np.inf, np.full(MAX_T, -np.log(MAX_T))].astype(np.float32)  # uniform on 1..MAX_T


def baseline(music=False, **kwargs):
    kwargs = {"embedding_size": E, "hidden_size": H, "dropout": 0.0, **kwargs}
    model = LSTMBaseline(88 if music else V, MAX_T, LOG_P_T, music=music, **kwargs)
    model.build()
    return model


def frames(batch, steps, seed=0):
    return tf.cast(tf.random.stateless_uniform([batch, steps, 88], seed=[seed, 3]) < 0.1, tf.float32)


def test_logits_equal_stepping_the_lstm_from_the_zero_state():
    """logits_t comes from the state after reading [e(x_s), pos[s + 1]] for s < t; logits_0 from zero."""
    model = baseline()
    logits = model((X, LENGTHS)).numpy()
    position = model.position(LENGTHS, num_steps=5, shift=1)
    states, output = model.rnn.zero_state(3), tf.zeros([3, H])
    valid = tf.sequence_mask(LENGTHS, 5).numpy()
    for t in range(5):
        np.testing.assert_allclose(logits[valid[:, t], t], model._logits(output).numpy()[valid[:, t]], atol=1e-5)
        output, states = model.rnn.step(model.embedding(X[:, t]), states, context=position[:, t])


def test_x0_is_predicted_from_the_zero_state_for_every_sequence_and_length():
    model = baseline()
    logits = model((X, LENGTHS)).numpy()
    other = model((tf.reverse(X, [0]), tf.constant([2, 4, 5]))).numpy()
    np.testing.assert_allclose(logits[:, 0], np.broadcast_to(logits[0, 0], (3, V)), atol=1e-6)
    np.testing.assert_allclose(other[:, 0], logits[:, 0], atol=1e-6)


def test_each_step_sees_only_the_past_and_the_length():
    model = baseline(music=True)
    x = frames(2, 6)
    lengths = tf.constant([6, 4])
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model((x, lengths))
    jacobian = tf.convert_to_tensor(tape.jacobian(logits, x)).numpy()  # [B, T, V, B, T, V]
    for b, length in enumerate(lengths.numpy()):
        for t in range(length):
            for s in range(6):
                depends = np.abs(jacobian[b, t, :, b, s]).max() > 0
                assert depends == (s < t), (b, t, s)
    # T-conditioning: the same prefix with another length changes every prediction after the first.
    changed = model((x, tf.constant([6, 5]))).numpy()
    np.testing.assert_allclose(changed[1, 0], logits[1, 0], atol=1e-6)
    assert np.all(np.abs(changed[1, 1:4] - logits.numpy()[1, 1:4]).max(-1) > 0)


@pytest.mark.parametrize("music", [False, True])
def test_padding_steps_change_nothing(music):
    model = baseline(music=music)
    x = frames(3, 5) if music else X
    log_likelihood = model.log_likelihood(x, LENGTHS).numpy()
    padding = [[0, 0], [0, 3]] + ([[0, 0]] if music else [])
    garbage = (tf.pad(x, padding, constant_values=1) if music
               else tf.where(tf.sequence_mask(LENGTHS, 8), tf.pad(x, padding), 4))
    np.testing.assert_allclose(model.log_likelihood(garbage, LENGTHS), log_likelihood, rtol=1e-6)
    for b, length in enumerate(LENGTHS.numpy()):  # each sequence alone
        alone = model.log_likelihood(x[b:b + 1, :length], LENGTHS[b:b + 1])
        np.testing.assert_allclose(alone[0], log_likelihood[b], rtol=1e-6)


def test_log_likelihood_is_the_chain_rule_plus_log_p_T():
    model = baseline()
    log_softmax = tf.nn.log_softmax(model((X, LENGTHS))).numpy()
    expected = [sum(log_softmax[b, t, X[b, t]] for t in range(length)) + LOG_P_T[length]
                for b, length in enumerate(LENGTHS.numpy())]
    np.testing.assert_allclose(model.log_likelihood(X, LENGTHS), expected, rtol=1e-6)


def test_train_step_objective_and_metrics():
    model = baseline()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = model.train_step((X, LENGTHS))
    nll = -model.log_likelihood(X, LENGTHS).numpy()
    tokens = LENGTHS.numpy() + 1.0
    assert float(logs["loss"]) == pytest.approx(np.mean(nll / tokens), rel=1e-5)
    assert float(logs["nll"]) == pytest.approx(nll.sum() / tokens.sum(), rel=1e-5)
    result = model.evaluate_nll([(X, LENGTHS)])
    assert result["nll"] == pytest.approx(nll.sum() / tokens.sum(), rel=1e-5)
    assert result["bpc"] == pytest.approx(result["nll"] / math.log(2))


def test_every_weight_gets_a_finite_nonzero_gradient():
    model = baseline(dropout=0.1)
    with tf.GradientTape() as tape:
        nll, tokens = model._objective(X, LENGTHS, training=True)
        loss = tf.reduce_mean(nll / tokens)
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) == 1 + 2 * 3 + 2 + 1  # embedding, 2 LSTM layers, projection, output bias
    for variable, grad in zip(model.trainable_variables, grads):
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.all(np.isfinite(grad)) and np.any(grad != 0.0), variable.path


def test_generation_samples_the_model_distribution():
    """Empirical frequencies of (x_0, x_1) match exp(log p(x | T = 2)) for every pair."""
    model = baseline()
    lengths = tf.fill([20000], 2)
    x, _ = model.generate(lengths, seed=1)
    counts = np.zeros((V, V))
    np.add.at(counts, (x.numpy()[:, 0], x.numpy()[:, 1]), 1)
    pairs = tf.constant([[a, b] for a in range(V) for b in range(V)])
    probabilities = np.exp(model.log_likelihood(pairs, tf.fill([V * V], 2)).numpy() - LOG_P_T[2])
    assert probabilities.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(counts.ravel() / 20000, probabilities, atol=0.012)


@pytest.mark.parametrize("music", [False, True])
def test_generate_shapes_padding_and_seeds(music):
    model = baseline(music=music)
    x, lengths = model.generate([4, 1, 3], seed=5)
    assert x.shape == ((3, 4, 88) if music else (3, 4)) and list(lengths.numpy()) == [4, 1, 3]
    mask = tf.sequence_mask(lengths, 4).numpy()
    assert not x.numpy()[~mask].any()
    np.testing.assert_array_equal(model.generate([4, 1, 3], seed=5)[0], x)
    assert not np.array_equal(model.generate([4, 1, 3], seed=6)[0], x)


def test_generate_draws_lengths_from_p_T_when_none_are_given():
    only_three = np.full(MAX_T + 1, -np.inf, np.float32)
    only_three[3] = 0.0
    model = LSTMBaseline(V, MAX_T, only_three, embedding_size=E, hidden_size=H)
    model.build()
    x, lengths = model.generate(num_samples=4, seed=0)
    assert list(lengths.numpy()) == [3] * 4 and x.shape == (4, 3)


def test_length_prior_may_be_a_callable_and_must_cover_max_time():
    model = LSTMBaseline(V, MAX_T, lambda lengths: -0.1 * tf.cast(lengths, tf.float32), embedding_size=E,
                         hidden_size=H)
    np.testing.assert_allclose(model.length_log_prob(tf.constant([2, 5])), [-0.2, -0.5])
    with pytest.raises(ValueError, match="T = 0..max_time"):
        LSTMBaseline(V, MAX_T, LOG_P_T[:-1])


def test_config_round_trip():
    model = baseline(music=True, dropout=0.1, position_encoding="sinusoidal", position_encoding_size=4)
    copy = LSTMBaseline.from_config(model.get_config())
    copy.build()
    copy.set_weights(model.get_weights())
    x = frames(3, 5)
    np.testing.assert_allclose(copy.log_likelihood(x, LENGTHS), model.log_likelihood(x, LENGTHS), rtol=1e-6)


def test_untied_output():
    model = baseline(tie_weights=False)
    assert model.count_params() == baseline().count_params() - V + (E * V + V)


def test_paper_size_parameter_count():
    """PTB baseline: the reference counts 5,436,051 (V 51, E = H = 500, 2 layers, max_T 288, tied)."""
    model = LSTMBaseline(51, 288, np.zeros(289), embedding_size=500, hidden_size=500)
    model.build()
    pytorch = (51 * 500  # tied embedding
               + 4 * 500 * (500 + 576 + 500) + 8 * 500  # layer 1: [e(x), pos] → 500, b_ih and b_hh
               + 4 * 500 * (500 + 500) + 8 * 500  # layer 2
               + 500 * 500 + 500  # the output FeedForwardNet's Linear(H → E)
               + 51)  # the tied output's bias
    assert pytorch == 5_436_051
    # Keras LSTMs carry one bias vector: 4H = 2,000 fewer per layer, 0.074 % in all.
    assert model.count_params() == pytorch - 2 * 2000
    assert abs(model.count_params() / pytorch - 1) < 0.005


def jsb_chorales(data_dir, count):
    """The first ``count`` JSB training chorales as ([N, T, 88] frames, lengths)."""
    pieces = scipy.io.loadmat(data_dir / "music" / "JSB_Chorales.mat")["traindata"][0][:count]
    lengths = np.array([len(piece) for piece in pieces], np.int32)
    x = np.zeros((count, lengths.max(), 88), np.float32)
    for i, piece in enumerate(pieces):
        x[i, :len(piece)] = piece
    return x, lengths


def train_on_jsb(data_dir, steps, size, learning_rate):
    """Fits a small baseline on 32 chorales (4 length-sorted batches of 8); returns (first, last) epoch loss."""
    x, lengths = jsb_chorales(data_dir, 32)
    order = np.argsort(lengths)
    batches = [(x[part, :lengths[part].max()], lengths[part]) for part in np.split(order, 4)]
    max_time = int(1.25 * lengths.max())
    log_p_T = np.log(np.full(max_time + 1, 1.0 / (max_time + 1)))
    keras.utils.set_random_seed(0)
    model = LSTMBaseline(88, max_time, log_p_T, music=True, embedding_size=size, hidden_size=size, dropout=0.0)
    model.build()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    data = tf.data.Dataset.from_generator(
        lambda: iter(batches), output_signature=(tf.TensorSpec([8, None, 88]), tf.TensorSpec([8], tf.int32)))
    history = model.fit(data.repeat(), epochs=steps // 4, steps_per_epoch=4, verbose=0).history["nll"]
    return history[0], history[-1]


def test_loss_goes_down_on_32_real_jsb_chorales(data_dir):
    """Size 32, 240 steps of Adam 1e-2 (about 7 s): the training NLL per frame (incl. −log p(T), over
    Σ(T + 1)) falls from 56.9 nats in the first epoch (88 fair coins: 61) to 9.9 in the last."""
    first, last = train_on_jsb(data_dir, steps=240, size=32, learning_rate=1e-2)
    assert first > 40.0 and last < 15.0


@pytest.mark.slow
def test_loss_keeps_going_down_on_jsb_at_a_larger_size(data_dir):
    """Size 64, 1,200 steps of Adam 5e-3 (about 40 s): 57.1 → 2.5 nats per frame (it memorises the 32)."""
    first, last = train_on_jsb(data_dir, steps=1200, size=64, learning_rate=5e-3)
    assert first > 40.0 and last < 5.0


def test_loop_and_cudnn_give_the_same_likelihood_and_gradients_and_cudnn_trains_without_a_loop():
    """model.lstm_impl: the same weights give the same log p(x, T) and gradients; the training step traced
    for a GPU runs each layer as one cuDNN op. Generation steps the same variables with either."""
    loop, cudnn = baseline(lstm_impl="loop"), baseline(lstm_impl="cudnn")
    cudnn.set_weights(loop.get_weights())
    results = []
    for model in (loop, cudnn):
        with tf.GradientTape() as tape:
            log_likelihood = model.log_likelihood(X, LENGTHS)
        grads = tape.gradient(tf.reduce_sum(log_likelihood), model.trainable_variables)
        results.append((log_likelihood, grads))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for a, b in zip(results[1][1], results[0][1]):  # None for the output layer's unused weights alike
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(cudnn.generate(LENGTHS, seed=3)[0], loop.generate(LENGTHS, seed=3)[0])

    cudnn.compile(optimizer=keras.optimizers.SGD(1.0))
    cudnn.optimizer.build(cudnn.trainable_variables)
    specs = tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)
    ops = traced_op_types(lambda x, lengths: cudnn.train_step((x, lengths)), *specs, device="/GPU:0")
    assert ops["CudnnRNNV3"] == ops["CudnnRNNBackpropV3"] == 2 and loops(ops) == 0
