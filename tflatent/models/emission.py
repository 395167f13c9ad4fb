"""The emission p(x | z): each x_t independent given z, from z_t and a bidirectional network over all of z.

Paper §5 and reference docs/reference.md §3.3 (``GenerativeBlock.apply_bilstm`` and ``DFModel.outp_ff``):

    (h→_t, h←_t) = BiLSTM([z_t, pos[t]])                       2 layers, packed by length
    u_t = [z_t, h→_{t−1}, h←_{t+1}]                            h→_{−1} = 0; h←_{L} = 0
    logits_t = (W u_t + b) Eᵀ + c                              W ~ U(±0.07), b = 0, c = 0 initially
    p(x_t | z) = Categorical(logits_t)                         text
               = Π_{n=1}^{V} Bernoulli(x_{t,n}; σ(logits_{t,n})) music (V = 88)

z_t enters u_t directly. With one BiLSTM layer the states have not read z_t (h→_{t−1} has read
z_<t, h←_{t+1} has read z_>t). With the reference's two stacked layers (a PyTorch
``LSTM(num_layers=2, bidirectional=True)``, kept here) the second layer reads both directions of the
first, so both top-layer states at t depend on every z_s of the sequence, z_t included: the shift
removes only the direct path. There is no nonlinearity between W and Eᵀ (the reference's
FeedForwardNet with 'none'); E is the input embedding (tied output), c its own bias.

With ``model.emission_network: transformer`` (beyond the paper) the BiLSTM is a self-attention encoder
over z (``tflatent.layers.sequence_network``), with padding keys masked in every block, and

    u_t = [z_t, Enc(z W_z + pos W_c + b)_t]

(no shift: self-attention has no direction, and its output at t has read every z_s, as the two
BiLSTM layers' has). x never enters p(x | z), so the emission is one parallel pass over z when
generating too. u_t's second part is the network's ``neighbour_states``; its width D (2H or d) sets W's.

The reference's music frames carry an extra always-zero "pad" column whose Bernoulli term it includes
in the loss; here frames are the 88 notes only, so that (near-zero, learned) term is absent.

Shapes: z [S, B, T, Z] (or [B, T, Z]); lengths [B]; logits [S, B, T, V]; per-step log p [S, B, T].
The S samples are folded into the network's batch; the position features are projected once per sequence.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tflatent.layers.initializers import uniform
from tflatent.layers.shared import part_of_a_model
from tflatent.seeds import stateless_seed

tfd = tfp.distributions


def emission_distribution(logits, music):
    """p(x_t | ·) from logits [..., V]: Categorical over V ids (text) or V independent Bernoullis (music).

    ``log_prob`` of a text x [...] int32 or a music frame x [..., V] float32 gives [...] (batch shapes
    broadcast, e.g. logits [S, B, T, V] against x [B, T]); ``sample`` gives x of the same kind.
    """
    if music:
        return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), reinterpreted_batch_ndims=1)
    return tfd.Categorical(logits=logits, dtype=tf.int32)


class EmissionNetwork(keras.layers.Layer):
    """p(x | z): (z, lengths) → logits [S, B, T, V]; ``log_prob`` and ``decode`` on top.

    Under a mixed-precision policy the sequence network and the projections compute in the compute
    dtype and the logits (so log p(x_t | z)) are in the variable dtype (float32).

    Args:
      vocab_size: V, token ids (text) or 88 (music).
      z_size: Z.
      network: the ``BidirectionalNetwork`` over [z_t, pos[t]] (``tflatent.layers.sequence_network``),
        with its own dropout inside (between the BiLSTM's layers, or in the encoder's blocks).
      music: whether x is a frame of independent Bernoullis (else a Categorical token).
      position: the ``PositionFeatures`` shared by the model's networks.
      embedding: the ``SequenceEmbedding`` whose matrix is the tied output (then W maps to its size;
        the reference maps to hidden_size, which tying forces to equal it), or None for an untied
        output Linear(hidden_size → V) (U(±0.07), bias 0).
      hidden_size: the width of W when the output is untied (the reference's hidden size, H); required then.
      dropout: dropout on the network's outputs (reference location "rnn_outp", which also sets the
        network's own dropout).
      output_dropout: dropout after W (reference location "outp_ff").
    """

    def __init__(self, vocab_size, z_size, network, *, music=False, position, embedding=None, hidden_size=None,
                 dropout=0.0, output_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if embedding is not None and (embedding.vocab_size != vocab_size or embedding.music != music):
            raise ValueError(f"EmissionNetwork(vocab_size={vocab_size}, music={music}) cannot tie its output "
                             f"to an embedding with vocab_size={embedding.vocab_size}, music={embedding.music}")
        if embedding is None and hidden_size is None:
            raise ValueError("EmissionNetwork: an untied output needs hidden_size, the width of W "
                             "(config: model.hidden_size)")
        self.vocab_size = int(vocab_size)
        self.z_size = int(z_size)
        self.music = bool(music)
        self.dropout_rate = float(dropout)
        self.output_dropout_rate = float(output_dropout)
        self.position = position
        self.embedding = embedding
        self.rnn = network  # the attribute name is the checkpoints' path of its weights: kept from the BiLSTM
        self.rnn_dropout = keras.layers.Dropout(dropout)
        width = hidden_size if embedding is None else embedding.size
        self.projection = keras.layers.Dense(
            width, kernel_initializer=uniform(), name="projection")
        self.output_dropout = keras.layers.Dropout(output_dropout)
        if embedding is None:
            self.output_layer = keras.layers.Dense(
                vocab_size, kernel_initializer=uniform(),
                name="output")

    def build(self, input_shape=None):
        self.rnn.build((None, None, self.z_size), (None, None, self.position.feature_size))
        self.projection.build((None, self.z_size + self.rnn.output_size))
        if self.embedding is None:
            self.output_layer.build((None, self.projection.units))
        else:
            if not self.embedding.built:
                self.embedding.build()
            self.output_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="output_bias")
        self.built = True

    def features(self, z, lengths, training=False, compiled=False):
        """u_t = [z_t, h→_{t−1}, h←_{t+1}] (BiLSTM) or [z_t, Enc(z)_t] (transformer): z [S, B, T, Z]
        (or [B, T, Z]) → [S, B, T, Z + D].

        ``compiled``: each LSTM loop runs as its own XLA executable (``LSTMStack.call``; inference only).
        """
        num_steps = tf.shape(z)[-2]
        h = self.rnn(z, mask=tf.sequence_mask(lengths, num_steps), context=self.position.compact(lengths, num_steps),
                     training=training, compiled=compiled)
        h = self.rnn_dropout(h, training=training)  # zero at padding (so h←_L = 0)
        return tf.concat([z, self.rnn.neighbour_states(h)], axis=-1)

    def call(self, z, lengths, training=False, compiled=False):
        """(z [S, B, T, Z] or [B, T, Z], lengths [B]) → logits [S, B, T, V] (or [B, T, V])."""
        features = self.features(z, lengths, training=training, compiled=compiled)
        h = self.output_dropout(self.projection(features), training=training)
        logits = self.output_layer(h) if self.embedding is None else self.embedding.reverse(h) + self.output_bias
        return tf.cast(logits, self.dtype_policy.variable_dtype)  # float32 under mixed precision

    def log_prob(self, x, z, lengths, training=False):
        """log p(x_t | z) per step: x [B, T] (or [B, T, V]) against z [S, B, T, Z] → [S, B, T], 0 at padding."""
        log_p = emission_distribution(self(z, lengths, training=training), self.music).log_prob(x)
        return log_p * tf.sequence_mask(lengths, tf.shape(log_p)[-1], dtype=log_p.dtype)

    def decode(self, z, lengths, sample=False, seed=None, compiled=False):
        """x from z: the mode (argmax token, or notes with p > 0.5, as the reference) or a sample.

        Returns x [..., B, T] int32 (text) or [..., B, T, V] float32 (music), zero at padding.
        ``seed``: None, an int or a stateless [2] seed (``tflatent.seeds``); used only when sampling.
        ``compiled``: the BiLSTM's loops run as XLA executables (one per shape; ``LSTMStack.call``'s
        ``compiled``): at batch 1 that halves the decoding time (there the two directions run one after
        the other, each on both cores; for several sequences side by side). The transformer's is one
        parallel pass with no loop.
        """
        logits = self(z, lengths, compiled=compiled)
        if sample:
            x = emission_distribution(logits, self.music).sample(seed=stateless_seed(seed))
        elif self.music:
            x = tf.cast(logits > 0.0, tf.float32)
        else:
            x = tf.argmax(logits, axis=-1, output_type=tf.int32)
        mask = tf.sequence_mask(lengths, tf.shape(logits)[-2], dtype=x.dtype)
        return x * (mask[..., None] if self.music else mask)

    def get_config(self):
        raise part_of_a_model(self, "the position features and the (tied) embedding", "LatentFlowModel")
