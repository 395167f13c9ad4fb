"""The reference's ``common.FeedForwardNet``: an MLP with U(±0.07) kernels and zero biases."""

import keras
import tensorflow as tf

from tflatent.layers.initializers import INIT_SCALE, uniform


@keras.saving.register_keras_serializable(package="tflatent")
class FeedForwardNet(keras.layers.Layer):
    """[Dense(hidden_units) → Dropout → activation] × hidden_layers → Dense(output_units).

    Every kernel is U(±init_scale) and every bias 0, as in the reference (``docs/reference.md`` §1,
    §2.6). With ``activation=None`` the hidden layers are linear (the reference's 'none', e.g. its
    output network Linear → Linear).

    Args:
      hidden_units: width of each hidden layer.
      output_units: width of the output.
      hidden_layers: number of hidden layers (0: a single Dense).
      activation: Keras activation of the hidden layers.
      dropout: rate after each hidden Dense, applied only when called with ``training=True``.
      init_scale: half-width of the uniform kernel initialiser.
    """

    def __init__(self, hidden_units, output_units, hidden_layers=2, activation="relu", dropout=0.0,
                 init_scale=INIT_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.output_units = output_units
        self.hidden_layers = hidden_layers
        self.activation = keras.activations.get(activation)
        self.dropout_rate = dropout
        self.init_scale = init_scale
        self.hidden = [keras.layers.Dense(hidden_units, kernel_initializer=uniform(init_scale),
                                          dtype=self.dtype_policy, name=f"hidden_{i}")
                       for i in range(hidden_layers)]
        self.output_layer = keras.layers.Dense(output_units, kernel_initializer=uniform(init_scale),
                                               dtype=self.dtype_policy, name="output")
        self.dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden:
            layer.build(shape)
            shape = shape[:-1] + (self.hidden_units,)
        self.output_layer.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        h = inputs
        for layer in self.hidden:
            h = self.activation(self.dropout(layer(h), training=training))
        return self.output_layer(h)

    def step_weights(self):
        """[(kernel, bias)] of the hidden layers and the output layer, in the compute dtype: for a loop
        that runs the net at every step to read once before it (``apply``). A differentiated loop keeps
        every weight it reads inside the loop once per step for the gradient."""
        return [(tf.cast(layer.kernel, self.compute_dtype), tf.cast(layer.bias, self.compute_dtype))
                for layer in (*self.hidden, self.output_layer)]

    def apply(self, inputs, weights, training=None):
        """``call`` with the weights of ``step_weights``: the same products, biases and dropout."""
        *hidden, (kernel, bias) = weights
        h = inputs
        for hidden_kernel, hidden_bias in hidden:
            h = self.activation(self.dropout(tf.matmul(h, hidden_kernel) + hidden_bias, training=training))
        return tf.matmul(h, kernel) + bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units,)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "output_units": self.output_units, "hidden_layers": self.hidden_layers,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout_rate, "init_scale": self.init_scale}
