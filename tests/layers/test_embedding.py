"""SequenceEmbedding: lookup for text, sum of note embeddings for music, the tied reverse projection."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflatent.layers.embedding import SequenceEmbedding


def built(*args, **kwargs):
    layer = SequenceEmbedding(*args, **kwargs)
    layer.build()
    return layer


def test_text_is_a_table_lookup():
    layer = built(7, 4)
    x = tf.constant([[1, 2, 0], [6, 6, 3]])
    np.testing.assert_array_equal(layer(x).numpy(), layer.embeddings.numpy()[x.numpy()])


def test_music_is_the_sum_of_the_active_notes_embeddings():
    layer = built(88, 4, music=True)
    frames = np.zeros((2, 3, 88), np.float32)
    frames[0, 0, [39, 43, 46]] = 1.0
    frames[1, 2, 60] = 1.0
    out = layer(tf.constant(frames)).numpy()
    table = layer.embeddings.numpy()
    np.testing.assert_allclose(out[0, 0], table[[39, 43, 46]].sum(0), atol=1e-6)
    np.testing.assert_allclose(out[1, 2], table[60], atol=1e-6)
    np.testing.assert_array_equal(out[0, 1], 0.0)  # a rest (or padding) embeds to zero


def test_reverse_is_the_transposed_matrix_for_the_tied_output():
    layer = built(7, 4)
    h = tf.random.stateless_normal([2, 3, 4], seed=[0, 1])
    np.testing.assert_allclose(layer.reverse(h).numpy(), h.numpy() @ layer.embeddings.numpy().T, atol=1e-5)


def test_initialisers():
    table = built(51, 500).embeddings.numpy()
    assert np.abs(table).max() <= 0.07 and np.abs(table).max() > 0.069
    xavier = built(51, 500, embeddings_initializer="glorot_uniform").embeddings.numpy()
    bound = np.sqrt(6.0 / (51 + 500))  # torch.nn.init.xavier_uniform_ on a [51, 500] weight
    assert np.abs(xavier).max() <= bound and np.abs(xavier).max() > 0.99 * bound


def test_dropout_only_when_training_and_never_on_the_reverse_projection():
    layer = built(7, 64, dropout=0.5)
    x = tf.constant([[1, 2, 3]])
    np.testing.assert_array_equal(layer(x).numpy(), layer.embeddings.numpy()[x.numpy()])
    dropped = layer(x, training=True).numpy()
    assert 0.2 < np.mean(dropped == 0.0) < 0.8
    h = tf.ones([1, 64])
    np.testing.assert_allclose(layer.reverse(h).numpy(), h.numpy() @ layer.embeddings.numpy().T, atol=1e-5)


def test_gradient_reaches_exactly_the_used_rows():
    layer = built(7, 4)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant([[1, 3]])))
    grad = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings)).numpy()
    np.testing.assert_array_equal(np.abs(grad).sum(1) > 0, [False, True, False, True, False, False, False])


def test_config_round_trip():
    layer = built(88, 6, music=True, dropout=0.2, embeddings_initializer="glorot_uniform")
    copy = SequenceEmbedding.from_config(layer.get_config())
    assert (copy.vocab_size, copy.size, copy.music, copy.dropout_rate) == (88, 6, True, 0.2)
    assert isinstance(copy.embeddings_initializer, keras.initializers.GlorotUniform)


@pytest.mark.parametrize("music", [False, True])
def test_shapes(music):
    layer = built(88 if music else 10, 5, music=music)
    x = tf.zeros([2, 3, 88]) if music else tf.zeros([2, 3], tf.int32)
    assert layer(x).shape == (2, 3, 5)
