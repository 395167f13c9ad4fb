"""Seeds for stateless sampling: the one convention every sampling method here accepts.

``seed`` is None (fresh randomness on every call, from TensorFlow's global generator), a Python int
(reproducible: the stateless seed [seed, 0]), or a stateless seed, an int tensor of shape [2].
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp


def stateless_seed(seed=None):
    """None | int | [2] int tensor → a [2] int32 stateless seed."""
    if seed is None:
        return tfp.random.sanitize_seed(None)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.cast(tf.reshape(seed, [2]), tf.int32)
