"""The input embedding, shared with the tied output layer.

Reference docs/reference.md §3.1 and §3.3. One matrix E [V, size]:

    text   emb(x_t) = E[x_t]                  (a table lookup; x_t a token id)
    music  emb(x_t) = x_t E = Σ_{n active} E_n (x_t an 88-dim {0, 1} frame: the sum of its notes' rows)

and the tied output layer computes h Eᵀ (``reverse``), to which its owner adds its own bias.
The flow model initialises E ~ U(±0.07); the LSTM baseline uses Xavier-uniform.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflatent.layers.initializers import uniform


@keras.saving.register_keras_serializable(package="tflatent")
class SequenceEmbedding(keras.layers.Layer):
    """x [B, T] int (text) or [B, T, V] float (music) → [B, T, size].

    Args:
      vocab_size: V, the number of token ids, or the frame width (88) for music.
      size: the embedding size.
      music: whether inputs are binary frames (sum of note embeddings) instead of token ids.
      dropout: dropout on the embedded inputs when training (reference location "embedding"; the
        baseline always uses it). It never touches ``reverse``.
      embeddings_initializer: a Keras initializer; default U(±0.07).
    """

    def __init__(self, vocab_size, size, music=False, dropout=0.0, embeddings_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.size = int(size)
        self.music = bool(music)
        self.dropout_rate = float(dropout)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer or uniform())
        self.dropout = keras.layers.Dropout(self.dropout_rate)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(shape=(self.vocab_size, self.size),
                                          initializer=self.embeddings_initializer, name="embeddings")

    def call(self, x, training=False):
        if self.music:
            embedded = tf.tensordot(tf.cast(x, self.embeddings.dtype), self.embeddings, axes=1)
        else:
            embedded = tf.gather(self.embeddings, x)
        return self.dropout(embedded, training=training)

    def reverse(self, h):
        """The tied output projection h Eᵀ: [..., size] → [..., V] (no bias)."""
        return tf.tensordot(h, self.embeddings, axes=[[-1], [1]])

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "size": self.size, "music": self.music,
                "dropout": self.dropout_rate,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)}
