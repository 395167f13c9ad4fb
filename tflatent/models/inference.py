"""The inference network q(z | x): a bidirectional network over the embedded sequence and a Gaussian per step.

Paper §5 and reference docs/reference.md §3.2 (``InferenceBlock``). With e_t the embedding of x_t and pos[t] the
position features,

    h_t = BiNet(e, pos)_t                                       ``tflatent.layers.sequence_network``
        = [h→_t, h←_t] = BiLSTM([e_t, pos[t]])                  lstm (the paper): 2 layers, packed by length
        = Enc(e W_x + pos W_c + b)_t                            transformer (beyond the paper): padding masked
    [μ_{t,1}, log σ²_{t,1}, μ_{t,2}, log σ²_{t,2}, ...] = W h_t + b     W ~ U(±0.07), b = 0
    q(z | x) = Π_t N(z_t; μ_t, diag σ_t²)

The head's outputs alternate (μ, log σ²) per dimension, as the reference reshapes them to [..., Z, 2].
There is no clamp on log σ², no minimum variance and no free bits. log q is computed from z itself
(not from the noise ε), as a Monte-Carlo term of the KL:

    log q(z_t | x) = −½ Σ_d [log 2π + log σ²_{t,d} + (z_{t,d} − μ_{t,d})² / σ²_{t,d}]

Shapes: x [B, T] int32 or [B, T, V] float32; lengths [B]; h [B, T, D] (D = 2H or d); μ, log σ² [B, T, Z];
samples z [S, B, T, Z].
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tflatent.layers.initializers import uniform
from tflatent.layers.shared import part_of_a_model
from tflatent.seeds import stateless_seed

_LOG_2PI = math.log(2.0 * math.pi)


class InferenceNetwork(keras.layers.Layer):
    """q(z | x): (x, lengths) → (μ, log σ²), each [B, T, Z].

    Under a mixed-precision policy the sequence network and the head compute in the compute dtype;
    μ, log σ², the samples and log q are in the variable dtype (float32).

    Args:
      z_size: Z.
      network: the ``BidirectionalNetwork`` over [e_t, pos[t]] (``tflatent.layers.sequence_network``),
        with its own dropout inside (between the BiLSTM's layers, or in the encoder's blocks).
      embedding: the ``SequenceEmbedding`` shared with the emission's tied output.
      position: the ``PositionFeatures`` shared by the model's networks.
      dropout: dropout on the network's outputs (reference location "rnn_x", which also sets the
        network's own dropout).
    """

    def __init__(self, z_size, network, *, embedding, position, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.z_size = int(z_size)
        self.dropout_rate = float(dropout)
        self.embedding = embedding
        self.position = position
        self.rnn = network  # the attribute name is the checkpoints' path of its weights: kept from the BiLSTM
        self.dropout = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(
            2 * z_size, kernel_initializer=uniform(),
            name="head")

    def build(self, input_shape=None):
        if not self.embedding.built:
            self.embedding.build()
        self.rnn.build((None, None, self.embedding.size), (None, None, self.position.feature_size))
        self.head.build((None, None, self.rnn.output_size))
        self.built = True

    def call(self, x, lengths, training=False):
        """(x [B, T] or [B, T, V], lengths [B]) → (μ, log σ²), each [B, T, Z]."""
        num_steps = tf.shape(x)[1]
        h = self.rnn(self.embedding(x, training=training), mask=tf.sequence_mask(lengths, num_steps),
                     context=self.position.compact(lengths, num_steps), training=training)
        h = self.dropout(h, training=training)
        params = tf.reshape(self.head(h), tf.concat([tf.shape(h)[:-1], [self.z_size, 2]], axis=0))
        params = tf.cast(params, self.dtype_policy.variable_dtype)  # float32 under mixed precision
        return params[..., 0], params[..., 1]

    def sample(self, mu, logvar, num_samples, seed=None):
        """z = μ + σ ε, ε ~ N(0, I), and log q(z_t | x): → (z [S, B, T, Z], log q [S, B, T]).

        ``seed``: None, an int or a stateless [2] seed (``tflatent.seeds``), or per-sequence seeds
        [B, 2] (``tflatent.seeds.sequence_seeds``): then sequence b's noise is drawn from its own seed
        step-major, [T, S, Z], so that its first L_b steps depend neither on the other sequences of
        the batch nor on the padded length T.
        """
        shape = tf.concat([[num_samples], tf.shape(mu)], axis=0)
        if seed is not None and not isinstance(seed, int) and tf.convert_to_tensor(seed).shape.rank == 2:
            per_sequence = tf.stack([tf.shape(mu)[1], num_samples, self.z_size])  # [T, S, Z]
            # A replica's share of an uneven batch may be empty, which map_fn cannot stack and XLA cannot
            # compile (not even in an untaken tf.cond branch): one extra seed, its draw dropped.
            seeds = tf.concat([tf.cast(seed, tf.int32), tf.zeros([1, 2], tf.int32)], axis=0)
            eps = tf.map_fn(  # Philox explicitly: the default algorithm differs with and without XLA
                lambda s: tf.random.stateless_normal(per_sequence, seed=s, dtype=mu.dtype, alg="philox"),
                seeds, fn_output_signature=tf.TensorSpec([None, None, self.z_size], mu.dtype))[:-1]
            eps = tf.transpose(eps, [2, 0, 1, 3])  # [B, T, S, Z] → [S, B, T, Z]
        else:
            # Philox explicitly: the default algorithm differs with and without XLA for the same seed.
            eps = tf.random.stateless_normal(shape, seed=stateless_seed(seed), dtype=mu.dtype, alg="philox")
        z = mu + tf.exp(0.5 * logvar) * eps
        return z, self.log_prob(z, mu, logvar)

    @staticmethod
    def log_prob(z, mu, logvar):
        """log q(z_t | x) summed over the Z dims: z [..., T, Z] against μ, log σ² [B, T, Z] → [..., T]."""
        return -0.5 * tf.reduce_sum(_LOG_2PI + logvar + tf.square(z - mu) * tf.exp(-logvar), axis=-1)

    def get_config(self):
        raise part_of_a_model(self, "the embedding and the position features", "LatentFlowModel")
