"""MADE with a context input, as the reference's ``MADE.py`` (``docs/reference.md`` §2.5, §10.3).

Degrees (an input may reach a unit iff unit degree ≥ input degree):
  data input i:        its order o_i (``input_order``, a permutation of 1..D)
  context inputs:      0, so the context reaches every unit
  hidden unit j:       j mod D, i.e. [0..D−1, 0..D−1, ...] tiled to the layer width
  output (p, i):       o_i − 1, k outputs per dim laid out param-major [k, D]

so the k parameters of dimension i depend on the context and on the dims of order < o_i only.
Initialisation: hidden kernels (data and context parts) U(±0.001), hidden biases 0; output kernel
and bias U(±1/√hidden_units), so at initialisation the outputs are ≈ their biases.

For autoregressive sampling the context is projected once with ``project_context`` and the D
sequential passes of ``call`` only redo the masked matmuls on x.
"""

import keras
import numpy as np
import tensorflow as tf

from tflatent.layers.initializers import uniform
from tflatent.layers.masked_dense import MaskedDense

HIDDEN_INIT_SCALE = 0.001


@keras.saving.register_keras_serializable(package="tflatent")
class MADE(keras.layers.Layer):
    """Masked MLP: x `[..., D]` and context `[..., C]` → autoregressive parameters `[..., D, k]`.

    Args:
      input_order: the orders of the D data inputs, a permutation of 1..D (1..D, or D..1 to reverse).
      num_params: k, outputs per data dimension (`NLSq.num_params`, `Affine.num_params`).
      context_dim: C, the width of the context (0: no context).
      hidden_layers: number of masked hidden ReLU layers (≥ 1).
      hidden_units: width of each hidden layer (≥ D, so every degree 0..D−1 is present).
      dropout: rate of the dropout before each masked layer (and on the context), applied only
        when called with ``training=True`` (the reference's 'prior_ff' location).

    Call: ``made(x, made.project_context(context), training=None)``.
    """

    def __init__(self, input_order, num_params, context_dim=0, hidden_layers=2, hidden_units=100,
                 dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        order = np.asarray(input_order, dtype="int64")
        dim = order.size
        if sorted(order.tolist()) != list(range(1, dim + 1)):
            raise ValueError(f"MADE input_order must be a permutation of 1..D, got {order.tolist()}.")
        if hidden_layers < 1:
            raise ValueError(f"MADE needs hidden_layers >= 1 (the context enters the first hidden "
                             f"layer), got {hidden_layers}.")
        if hidden_units < dim:
            raise ValueError(f"MADE needs hidden_units >= D = {dim} so that every degree 0..D-1 has a "
                             f"unit, got hidden_units={hidden_units}; use at least {dim}.")
        self.input_order = order
        self.num_params = num_params
        self.context_dim = context_dim
        self.hidden_layers = hidden_layers
        self.hidden_units = hidden_units
        self.dropout_rate = dropout

        output_bound = 1.0 / np.sqrt(hidden_units)  # PyTorch's nn.Linear default
        hidden_degrees = np.arange(hidden_units) % dim
        output_degrees = np.tile(order - 1, num_params)  # param-major: unit p·D + i is (p, i)
        in_degrees = order
        self.hidden = []
        for layer in range(hidden_layers):
            self.hidden.append(MaskedDense(
                hidden_units, hidden_degrees[None, :] >= in_degrees[:, None],
                kernel_initializer=uniform(HIDDEN_INIT_SCALE),
                dtype=self.dtype_policy, name=f"hidden_{layer}"))
            in_degrees = hidden_degrees
        self.context_projection = keras.layers.Dense(hidden_units, use_bias=False,
                                                     kernel_initializer=uniform(HIDDEN_INIT_SCALE),
                                                     dtype=self.dtype_policy,
                                                     name="context")
        self.output_layer = MaskedDense(num_params * dim, output_degrees[None, :] >= in_degrees[:, None],
                                        kernel_initializer=uniform(output_bound),
                                        bias_initializer=uniform(output_bound),
                                        dtype=self.dtype_policy, name="output")
        self.dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    @property
    def dim(self):
        return self.input_order.size

    def build(self, input_shape=None):
        """Builds every sub-layer from the constructor's sizes (``input_shape`` is not needed)."""
        self.context_projection.build((None, self.context_dim))
        width = self.dim
        for layer in self.hidden:
            layer.build((None, width))
            width = self.hidden_units
        self.output_layer.build((None, width))
        self.built = True

    def project_context(self, context, training=None):
        """The context's contribution to the first hidden layer: `[..., C]` → `[..., hidden_units]`."""
        return self.context_projection(self.dropout(context, training=training))

    def call(self, x, projected_context, training=None):
        """x `[..., D]`, projected_context `[..., hidden_units]` (broadcastable) → `[..., D, k]`."""
        h = self.hidden[0](self.dropout(x, training=training)) + projected_context
        h = tf.nn.relu(h)
        for layer in self.hidden[1:]:
            h = tf.nn.relu(layer(self.dropout(h, training=training)))
        out = self.output_layer(self.dropout(h, training=training))
        out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.num_params, self.dim]], axis=0))
        return tf.linalg.matrix_transpose(out)  # [..., k, D] → [..., D, k]

    def get_config(self):
        return {**super().get_config(), "input_order": self.input_order.tolist(),
                "num_params": self.num_params, "context_dim": self.context_dim,
                "hidden_layers": self.hidden_layers, "hidden_units": self.hidden_units,
                "dropout": self.dropout_rate}
