"""InferenceNetwork q(z|x): head layout, padding invariance, sampling and log q, gradients, sizes."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tflatent.layers.embedding import SequenceEmbedding
from tflatent.layers.lstm import LSTMStack
from tflatent.layers.position import PositionFeatures
from tflatent.layers.sequence_network import BidirectionalAttention, BidirectionalLSTM
from tflatent.models.inference import InferenceNetwork
from tflatent.seeds import sequence_seeds

V, E, H, Z, MAX_T = 9, 6, 8, 3, 10
X = tf.constant([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0], [2, 0, 0, 0, 0]])
LENGTHS = tf.constant([5, 3, 1])


def network(music=False, kind="lstm", dropout=0.0, init="pytorch"):
    sequence = (BidirectionalLSTM(H, 2, dropout_between_layers=dropout, init=init, name="bilstm") if kind == "lstm"
                else BidirectionalAttention(8, 2, 2, 16, dropout=dropout, name="encoder"))
    q = InferenceNetwork(Z, sequence, embedding=SequenceEmbedding(88 if music else V, E, music=music),
                         position=PositionFeatures(MAX_T), dropout=dropout)
    q.build()
    return q


def test_head_outputs_alternate_mean_and_log_variance():
    q = network()
    mu, logvar = q(X, LENGTHS)
    assert mu.shape == logvar.shape == (3, 5, Z)
    forward, backward = LSTMStack.call(q.rnn, q.embedding(X), mask=tf.sequence_mask(LENGTHS, 5),
                                       context=q.position(LENGTHS, num_steps=5))
    head = q.head(tf.concat([forward, backward], axis=-1)).numpy()  # [..., 2Z]
    np.testing.assert_allclose(mu, head[..., 0::2], atol=1e-6)
    np.testing.assert_allclose(logvar, head[..., 1::2], atol=1e-6)


def test_head_initialisation():
    q = network()
    kernel, bias = q.head.kernel.numpy(), q.head.bias.numpy()
    assert kernel.shape == (2 * H, 2 * Z) and np.abs(kernel).max() <= 0.07
    np.testing.assert_array_equal(bias, 0.0)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_padding_steps_change_nothing(kind):
    q = network(kind=kind)
    mu, logvar = q(X, LENGTHS)
    garbage = tf.where(tf.sequence_mask(LENGTHS, 5), X, 7)  # other content at the padding
    padded = tf.pad(garbage, [[0, 0], [0, 4]], constant_values=8)  # and more of it
    mu_padded, logvar_padded = q(padded, LENGTHS)
    mask = tf.sequence_mask(LENGTHS, 5)[..., None]
    np.testing.assert_allclose(tf.where(mask, mu_padded[:, :5], 0), tf.where(mask, mu, 0), atol=1e-5)
    np.testing.assert_allclose(tf.where(mask, logvar_padded[:, :5], 0), tf.where(mask, logvar, 0), atol=1e-5)
    for b, length in enumerate(LENGTHS.numpy()):  # and each sequence alone
        alone, _ = q(X[b:b + 1, :length], LENGTHS[b:b + 1])
        np.testing.assert_allclose(mu[b, :length], alone[0], atol=1e-5)


def test_log_prob_is_the_diagonal_gaussian_density_of_z():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(2, 4, Z)), rng.normal(size=(2, 4, Z))
    z = rng.normal(size=(5, 2, 4, Z))
    expected = stats.norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum(-1)
    got = InferenceNetwork.log_prob(tf.constant(z, tf.float32), tf.constant(mu, tf.float32),
                                    tf.constant(logvar, tf.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_samples_are_reparameterised_draws_and_log_q_is_computed_from_z():
    q = network()
    mu, logvar = q(X, LENGTHS)
    z, log_q = q.sample(mu, logvar, 2000, seed=3)
    assert z.shape == (2000, 3, 5, Z) and log_q.shape == (2000, 3, 5)
    eps = ((z - mu) / tf.exp(0.5 * logvar)).numpy()
    assert abs(eps.mean()) < 0.01 and abs(eps.std() - 1.0) < 0.01
    from_eps = -0.5 * np.sum(math.log(2 * math.pi) + logvar.numpy() + eps ** 2, axis=-1)
    np.testing.assert_allclose(log_q, from_eps, rtol=1e-4, atol=1e-4)
    again, _ = q.sample(mu, logvar, 2000, seed=3)
    np.testing.assert_array_equal(again, z)
    other, _ = q.sample(mu, logvar, 2000)
    assert not np.allclose(other, z)


@pytest.mark.parametrize("kind,count", [("lstm", 1 + 4 * 3 + 2),  # embedding, 4 layer-directions, head
                                        ("transformer", 1 + 3 + 2 * 16 + 2 + 2)])  # + projections, blocks, LN
def test_every_weight_gets_a_finite_nonzero_gradient(kind, count):
    q = network(kind=kind, dropout=0.2)
    with tf.GradientTape() as tape:
        mu, logvar = q(X, LENGTHS, training=True)
        z, log_q = q.sample(mu, logvar, 2, seed=1)
        loss = tf.reduce_sum(log_q * tf.sequence_mask(LENGTHS, 5, tf.float32)) + tf.reduce_sum(tf.square(z))
    grads = tape.gradient(loss, q.trainable_variables)
    assert len(grads) == count
    for variable, grad in zip(q.trainable_variables, grads):
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.all(np.isfinite(grad)) and np.any(grad != 0.0), variable.path


def test_music_frames():
    q = network(music=True)
    frames = tf.cast(tf.random.stateless_uniform([2, 4, 88], seed=[1, 2]) < 0.1, tf.float32)
    mu, logvar = q(frames, tf.constant([4, 2]))
    assert mu.shape == (2, 4, Z)


def test_paper_size_parameter_count():
    """docs/reference.md §7.3: inference BiLSTM + head 12.42M for PTB (V 51, E 500, H 500, Z 50, max_T 288)."""
    q = InferenceNetwork(50, BidirectionalLSTM(500, 2), embedding=SequenceEmbedding(51, 500),
                         position=PositionFeatures(288))
    q.build()
    pytorch = (2 * (4 * 500 * (500 + 576 + 500) + 8 * 500)  # layer 1, both directions, two biases each
               + 2 * (4 * 500 * (1000 + 500) + 8 * 500)  # layer 2
               + 1000 * 100 + 100)  # head
    assert pytorch == 12_420_100
    # Keras LSTMs carry one bias vector: 4H = 2,000 fewer per layer-direction.
    assert q.count_params() - q.embedding.count_params() == pytorch - 4 * 2000


def test_it_is_saved_only_as_part_of_its_model():
    """A config of its own would deserialize the shared embedding as a copy (models/test_base.py saves it)."""
    with pytest.raises(NotImplementedError, match="shares the embedding and the position features"):
        network(dropout=0.1, init="keras").get_config()


@pytest.mark.parametrize("num_samples", [1, 4])
def test_sample_shapes(num_samples):
    q = network()
    mu, logvar = q(X, LENGTHS)
    z, log_q = q.sample(mu, logvar, num_samples)
    assert z.shape == (num_samples, 3, 5, Z) and log_q.shape == (num_samples, 3, 5)


def test_compiles_under_xla_with_the_same_samples_and_gradients():
    q = network()

    def run(x, lengths):
        with tf.GradientTape() as tape:
            mu, logvar = q(x, lengths)
            z, log_q = q.sample(mu, logvar, 2, seed=tf.constant([1, 2]))
            loss = tf.reduce_sum(log_q * tf.sequence_mask(lengths, 5, tf.float32)) + tf.reduce_sum(z)
        return z, tape.gradient(loss, q.trainable_variables)

    eager = run(X, LENGTHS)
    compiled = tf.function(run, jit_compile=True)(X, LENGTHS)
    # The same noise: the seed is a constant, whose draw TensorFlow folds before XLA (a seed passed in
    # would draw from XLA's own stream; test_per_sequence_noise_compiles_under_xla_also_for_an_empty_batch).
    np.testing.assert_allclose(compiled[0], eager[0], atol=1e-5)
    for a, b in zip(compiled[1], eager[1]):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), rtol=1e-4, atol=1e-5)


def test_per_sequence_noise_compiles_under_xla_also_for_an_empty_batch():
    """Per-sequence seeds (``sequence_seeds``) under XLA: a sequence's draw does not depend on the rest of
    the batch, and a replica's empty share of an uneven batch gives empty samples (a map_fn over no
    seeds does not compile). XLA's random stream is not TensorFlow's kernels', so eager draws differ."""
    q = network()
    mu, logvar = q(X, LENGTHS)
    seeds = sequence_seeds(4, X, LENGTHS)
    draw = tf.function(lambda mu, logvar, seeds: q.sample(mu, logvar, 2, seed=seeds), jit_compile=True)
    z, _ = draw(mu, logvar, seeds)
    np.testing.assert_allclose(draw(mu[1:], logvar[1:], seeds[1:])[0], z[:, 1:], atol=1e-6)
    empty, log_q = draw(mu[:0], logvar[:0], seeds[:0])
    assert empty.shape == (2, 0, 5, Z) and log_q.shape == (2, 0, 5)
