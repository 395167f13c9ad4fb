"""A dense layer whose kernel is multiplied by a fixed 0/1 mask (the building block of MADE)."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="tflatent")
class MaskedDense(keras.layers.Layer):
    """y = activation(x · (W ⊙ M) + b) with a fixed mask M of shape [in_features, units].

    Masked-out weights exist but never influence the output and receive zero gradient.

    Args:
      units: output width.
      mask: `[in_features, units]` array of 0/1; ``mask[i, j] = 1`` lets input i reach unit j.
      activation: any Keras activation (None: linear).
      use_bias: whether to add b.
      kernel_initializer, bias_initializer: Keras initializers.
    """

    def __init__(self, units, mask, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        mask = np.asarray(mask, dtype="float32")
        if mask.ndim != 2 or mask.shape[1] != units:
            raise ValueError(f"MaskedDense mask must have shape [in_features, units={units}], "
                             f"got {mask.shape}.")
        self.units = units
        self.kernel_mask = mask
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        if input_shape[-1] != self.kernel_mask.shape[0]:
            raise ValueError(f"MaskedDense {self.name!r} has a mask for {self.kernel_mask.shape[0]} input "
                             f"features but got inputs of shape {input_shape}.")
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_mask.shape,
                                      initializer=self.kernel_initializer)
        self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
                     if self.use_bias else None)

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel * ops.convert_to_tensor(self.kernel_mask, self.kernel.dtype))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "mask": self.kernel_mask.tolist(),
                "activation": keras.activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
