"""Conditioner of an SCF coupling layer, as the reference's ``flows.SCFLayer`` (docs/reference.md §2.6)."""

import keras
import tensorflow as tf

from tflatent.layers.feed_forward import FeedForwardNet


@keras.saving.register_keras_serializable(package="tflatent")
class CouplingConditioner(keras.layers.Layer):
    """[kept half `[..., K]`, context `[..., C]`] → parameters of the transformed half `[..., M, k]`.

    A `FeedForwardNet` (ReLU hidden layers, U(±0.07) kernels, zero biases) on the concatenation,
    whose ``M·k`` outputs are laid out dim-major (``[..., i, :]`` = the k parameters of transformed
    dimension i). For the reference's D = 50, C = 500: Linear(525→100) → ReLU → Linear(100→100) →
    ReLU → Linear(100→125), reshaped to [..., 25, 5]. The leading dims of the two inputs broadcast.

    Args:
      num_kept: K, width of the conditioning (pass-through) half; may be 0.
      num_transformed: M, width of the transformed half.
      num_params: k, parameters per transformed dimension.
      context_dim: C (0: no context).
      hidden_layers, hidden_units: sizes of the MLP.
      dropout: rate after each hidden layer, applied only when called with ``training=True``.
    """

    def __init__(self, num_kept, num_transformed, num_params, context_dim=0, hidden_layers=2,
                 hidden_units=100, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_kept = num_kept
        self.num_transformed = num_transformed
        self.num_params = num_params
        self.context_dim = context_dim
        self.hidden_layers = hidden_layers
        self.hidden_units = hidden_units
        self.dropout_rate = dropout
        self.net = FeedForwardNet(hidden_units, num_transformed * num_params, hidden_layers=hidden_layers,
                                  dropout=dropout, dtype=self.dtype_policy, name="net")

    def build(self, input_shape=None):
        """Builds the MLP from the constructor's sizes (``input_shape`` is not needed)."""
        self.net.build((None, self.num_kept + self.context_dim))
        self.built = True

    def call(self, kept, context, training=None, weights=None):
        """The parameters [..., M, k]; ``weights``: the net's ``step_weights`` (a loop's, read once before
        it), or None to read the variables here."""
        inputs = tf.concat([_broadcast_leading(kept, context), _broadcast_leading(context, kept)], axis=-1)
        out = self.net(inputs, training=training) if weights is None else self.net.apply(inputs, weights, training)
        return tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.num_transformed, self.num_params]], 0))

    def step_weights(self):
        """The net's ``step_weights``."""
        return self.net.step_weights()

    def get_config(self):
        return {**super().get_config(), "num_kept": self.num_kept, "num_transformed": self.num_transformed,
                "num_params": self.num_params, "context_dim": self.context_dim,
                "hidden_layers": self.hidden_layers, "hidden_units": self.hidden_units,
                "dropout": self.dropout_rate}


def _broadcast_leading(x, other):
    """x [..., F] with its leading dims broadcast against ``other``'s [..., ·].

    By adding zeros rather than ``tf.broadcast_to`` with a computed shape: inside a ``tf.while_loop``
    (the IAF density's steps) the gradient of ``broadcast_to`` reads that shape back from the loop's
    accumulators, which XLA refuses (it needs shapes as compile-time constants), whereas the gradient
    of an addition takes its operands' shapes, which XLA knows.
    """
    return x + tf.zeros(tf.concat([tf.shape(other)[:-1], [1]], 0), x.dtype)
