"""EmissionNetwork p(x|z): causality of the features by Jacobian, densities, padding, tying, sizes."""

import numpy as np
import pytest
import tensorflow as tf

from tflatent.layers.embedding import SequenceEmbedding
from tflatent.layers.position import PositionFeatures
from tflatent.layers.sequence_network import BidirectionalAttention, BidirectionalLSTM
from tflatent.models.emission import EmissionNetwork, emission_distribution

V, E, H, Z, MAX_T, T = 9, 6, 8, 3, 10, 5
LENGTHS = tf.constant([5, 3, 1])
X = tf.constant([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0], [2, 0, 0, 0, 0]])


def sequence_network(kind, num_layers=2, dropout=0.0):
    if kind == "lstm":
        return BidirectionalLSTM(H, num_layers, dropout_between_layers=dropout, name="bilstm")
    return BidirectionalAttention(8, num_layers, 2, 16, dropout=dropout, name="encoder")


def network(music=False, tied=True, kind="lstm", dropout=0.0, **kwargs):
    vocab = 88 if music else V
    embedding = SequenceEmbedding(vocab, E, music=music) if tied else None
    p = EmissionNetwork(vocab, Z, sequence_network(kind, dropout=dropout), music=music,
                        position=PositionFeatures(MAX_T), embedding=embedding, hidden_size=H, dropout=dropout,
                        **kwargs)
    p.build()
    return p


def latents(*shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 7])


def frames(batch, steps, seed=0):
    return tf.cast(tf.random.stateless_uniform([batch, steps, 88], seed=[seed, 3]) < 0.1, tf.float32)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_features_see_z_t_directly_and_the_rest_of_z_through_the_shifted_states(num_layers):
    """u_t = [z_t, h→_{t−1}, h←_{t+1}]. One layer: h→_{t−1} has read exactly z_<t and h←_{t+1} exactly
    z_s for t < s < L. Two stacked layers (the reference): layer 2 reads both directions of layer 1, so
    each non-zero state depends on every valid z_s, z_t included."""
    p = EmissionNetwork(V, Z, sequence_network("lstm", num_layers), position=PositionFeatures(MAX_T),
                        embedding=SequenceEmbedding(V, E))
    p.build()
    z = latents(3, T, Z)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        u = p.features(z, LENGTHS)  # [B, T, Z + 2H]
        forward, backward = u[..., Z:Z + H], u[..., Z + H:]  # h→_{t−1}, h←_{t+1}
    np.testing.assert_array_equal(u[..., :Z], z)
    forward = tape.jacobian(forward, z).numpy()  # [B, T, H, B, T, Z]
    backward = tape.jacobian(backward, z).numpy()
    for b, length in enumerate(LENGTHS.numpy()):
        for t in range(length):
            for s in range(T):
                reads_forward = np.abs(forward[b, t, :, b, s]).max() > 0
                reads_backward = np.abs(backward[b, t, :, b, s]).max() > 0
                if num_layers == 1:
                    assert reads_forward == (s < t) and reads_backward == (t < s < length), (b, t, s)
                else:
                    assert reads_forward == (t > 0 and s < length), (b, t, s)
                    assert reads_backward == (t < length - 1 and s < length), (b, t, s)
        for other in set(range(3)) - {b}:  # no leak across the batch
            assert not np.any(forward[b, :, :, other]) and not np.any(backward[b, :, :, other])


def test_transformer_features_are_z_t_and_an_encoding_that_reads_every_valid_z_s():
    """u_t = [z_t, Enc(z)_t]: the emission at t sees all of z (both sides of t) and no padding."""
    p = network(kind="transformer")
    z = latents(3, T, Z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        u = p.features(z, LENGTHS)  # [B, T, Z + d]
        encoded = u[..., Z:]
    assert u.shape == (3, T, Z + 8)
    np.testing.assert_array_equal(u[..., :Z], z)
    jacobian = tf.convert_to_tensor(tape.jacobian(encoded, z)).numpy()  # [B, T, d, B, T, Z]
    for b, length in enumerate(LENGTHS.numpy()):
        for t in range(T):
            for s in range(T):
                assert (np.abs(jacobian[b, t, :, b, s]).max() > 0) == (t < length and s < length), (b, t, s)
        for other in set(range(3)) - {b}:
            assert not np.any(jacobian[b, :, :, other])


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_log_p_x_t_depends_on_z_t_and_never_on_padding(kind):
    p = network(kind=kind)
    z = latents(3, T, Z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        log_p = p.log_prob(X, z, LENGTHS)  # [B, T]
    jacobian = tf.convert_to_tensor(tape.jacobian(log_p, z)).numpy()  # [B, T, B, T, Z]
    for b, length in enumerate(LENGTHS.numpy()):
        for t in range(T):
            if t < length:
                assert np.abs(jacobian[b, t, b, t]).max() > 0
            else:
                assert np.abs(jacobian[b, t]).max() == 0  # masked steps
            assert not np.any(jacobian[b, t, b, length:])  # padding z never matters


def test_text_log_prob_is_the_categorical_of_the_tied_logits():
    p = network()
    z = latents(2, 3, T, Z)
    logits = p(z, LENGTHS).numpy()
    u = p.features(z, LENGTHS).numpy()
    table = p.embedding.embeddings.numpy()
    expected_logits = (u @ p.projection.kernel.numpy() + p.projection.bias.numpy()) @ table.T \
        + p.output_bias.numpy()
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.take_along_axis(log_softmax, np.broadcast_to(X.numpy()[None, ..., None], (2, 3, T, 1)), -1)[..., 0]
    expected *= tf.sequence_mask(LENGTHS, T, tf.float32).numpy()
    np.testing.assert_allclose(p.log_prob(X, z, LENGTHS), expected, atol=1e-5)


def test_music_log_prob_sums_88_bernoullis():
    p = network(music=True)
    x, z = frames(3, T), latents(3, T, Z)
    logits = p(z, LENGTHS).numpy().astype(np.float64)
    expected = (x.numpy() * -np.logaddexp(0, -logits) + (1 - x.numpy()) * -np.logaddexp(0, logits)).sum(-1)
    expected *= tf.sequence_mask(LENGTHS, T, tf.float64).numpy()
    np.testing.assert_allclose(p.log_prob(x, z, LENGTHS), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("music,kind", [(False, "lstm"), (True, "lstm"), (False, "transformer")])
def test_padding_steps_change_nothing(music, kind):
    p = network(music=music, kind=kind)
    x = frames(3, T) if music else X
    z = latents(2, 3, T, Z)
    log_p = p.log_prob(x, z, LENGTHS).numpy()
    extra = 4
    x_padded = tf.pad(x, [[0, 0], [0, extra]] + ([[0, 0]] if music else []))
    z_padded = tf.concat([z, 100.0 * latents(2, 3, extra, Z, seed=1)], axis=2)
    padded = p.log_prob(x_padded, z_padded, LENGTHS).numpy()
    np.testing.assert_allclose(padded[..., :T], log_p, atol=1e-5)
    np.testing.assert_array_equal(padded[..., T:], 0.0)
    np.testing.assert_array_equal(log_p[:, 1, 3:], 0.0)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_samples_fold_into_the_batch_exactly(kind):
    p = network(kind=kind)
    z = latents(4, 3, T, Z)
    logits = p(z, LENGTHS).numpy()
    for s in range(4):
        np.testing.assert_allclose(logits[s], p(z[s], LENGTHS).numpy(), atol=1e-5)


@pytest.mark.parametrize("music,kind", [(False, "lstm"), (True, "lstm"), (True, "transformer")])
def test_decode(music, kind):
    p = network(music=music, kind=kind)
    z = latents(3, T, Z)
    logits = p(z, LENGTHS).numpy()
    mask = tf.sequence_mask(LENGTHS, T).numpy()
    greedy = p.decode(z, LENGTHS).numpy()
    expected = (logits > 0).astype(np.float32) if music else logits.argmax(-1)
    np.testing.assert_array_equal(greedy[mask], expected[mask])
    assert not greedy[~mask].any()
    sampled = p.decode(z, LENGTHS, sample=True, seed=4).numpy()
    np.testing.assert_array_equal(sampled, p.decode(z, LENGTHS, sample=True, seed=4).numpy())
    assert not sampled[~mask].any()


def test_sampling_follows_the_emission_distribution():
    logits = tf.constant([[2.0, 0.0, -1.0]])
    draws = emission_distribution(tf.tile(logits, [20000, 1]), music=False).sample(seed=[1, 2]).numpy()
    frequencies = np.bincount(draws, minlength=3) / draws.size
    np.testing.assert_allclose(frequencies, tf.nn.softmax(logits)[0], atol=0.015)
    notes = emission_distribution(tf.tile(logits, [20000, 1]), music=True).sample(seed=[1, 2]).numpy()
    np.testing.assert_allclose(notes.mean(0), tf.sigmoid(logits)[0], atol=0.015)


@pytest.mark.parametrize("tied,kind,count", [(True, "lstm", 4 * 3 + 2 + 2), (False, "lstm", 4 * 3 + 2 + 2),
                                              (True, "transformer", 3 + 2 * 16 + 2 + 2 + 2)])
def test_every_weight_gets_a_finite_nonzero_gradient(tied, kind, count):
    p = network(tied=tied, kind=kind, dropout=0.2, output_dropout=0.2)
    z = latents(2, 3, T, Z)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(p.log_prob(X, z, LENGTHS, training=True))
    grads = tape.gradient(loss, p.trainable_variables)
    assert len(grads) == count  # the network's, W's and the output's (tied: the embedding and its bias)
    for variable, grad in zip(p.trainable_variables, grads):
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.all(np.isfinite(grad)) and np.any(grad != 0.0), variable.path


def test_tying_checks_the_embedding():
    with pytest.raises(ValueError, match="cannot tie"):
        EmissionNetwork(V, Z, sequence_network("lstm"), position=PositionFeatures(MAX_T),
                        embedding=SequenceEmbedding(V + 1, E))
    with pytest.raises(ValueError, match="untied output needs hidden_size"):
        EmissionNetwork(V, Z, sequence_network("lstm"), position=PositionFeatures(MAX_T))


def test_paper_size_parameter_count():
    """docs/reference.md §7.3: generative BiLSTM 10.52M and output FF 0.53M for PTB (Z 50, H 500, E 500, max_T 288)."""
    p = EmissionNetwork(51, 50, BidirectionalLSTM(500, 2), position=PositionFeatures(288),
                        embedding=SequenceEmbedding(51, 500))
    p.build()
    bilstm = 2 * (4 * 500 * (50 + 576 + 500) + 8 * 500) + 2 * (4 * 500 * (1000 + 500) + 8 * 500)
    output = 1050 * 500 + 500 + 51  # Linear(1050 → 500) and the tied output's bias
    assert (bilstm, output) == (10_520_000, 525_551)
    # Keras LSTMs carry one bias vector: 4H = 2,000 fewer per layer-direction.
    assert p.count_params() - p.embedding.count_params() == bilstm - 4 * 2000 + output


def test_it_is_saved_only_as_part_of_its_model():
    """A config of its own would deserialize the tied embedding as a copy (models/test_base.py saves it)."""
    with pytest.raises(NotImplementedError, match="shares the position features and the .tied. embedding"):
        network(music=True).get_config()


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_compiles_under_xla_with_the_same_values_and_gradients(kind):
    p = network(music=True, kind=kind)
    x, z = frames(3, T), latents(2, 3, T, Z)

    def run(x, z, lengths):
        with tf.GradientTape() as tape:
            log_p = p.log_prob(x, z, lengths)
            total = tf.reduce_sum(log_p)
        return log_p, tape.gradient(total, p.trainable_variables)

    eager = run(x, z, LENGTHS)
    compiled = tf.function(run, jit_compile=True)(x, z, LENGTHS)
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5, atol=1e-4)
    for a, b in zip(compiled[1], eager[1]):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), rtol=1e-4, atol=1e-4)
