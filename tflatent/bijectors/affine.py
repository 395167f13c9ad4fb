"""The elementwise affine flow of the paper's "− NLSq" ablation, as a TFP bijector.

Noise side ε, data side z (``docs/reference.md`` §2.4, ``--transform_function affine``)::

    z = a + b·ε,   b = exp(v/2)                                          (forward)
    ε = (z − a)/b                                                        (inverse)
    log|∂z/∂ε| = v/2 per element                                         (forward log-det)
"""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util

tfb = tfp.bijectors

__all__ = ["Affine"]


class Affine(tfb.AutoCompositeTensorBijector):
    """Elementwise ``forward`` z = shift + exp(log_scale)·ε, same interface as `NLSq`.

    Build it from network outputs with ``Affine.from_raw_params``.
    """

    num_params = 2

    def __init__(self, shift, log_scale, validate_args=False, name="affine"):
        """Creates the bijector from the shift a and the log-scale log b = v/2 (any reals)."""
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([shift, log_scale], dtype_hint=tf.float32)
            self._shift = tf.convert_to_tensor(shift, dtype=dtype, name="shift")
            self._log_scale = tf.convert_to_tensor(log_scale, dtype=dtype, name="log_scale")
            super().__init__(forward_min_event_ndims=0, dtype=dtype, validate_args=validate_args,
                             parameters=parameters, name=name)

    @classmethod
    def from_raw_params(cls, raw_params, validate_args=False, name="affine"):
        """Creates the bijector from unconstrained network outputs.

        Args:
          raw_params: `[..., D, 2]`, dim-major: ``raw_params[..., i, :]`` = (a, v) of dimension i;
            shift = a, log_scale = v/2.
        """
        raw_params = tf.convert_to_tensor(raw_params)
        if raw_params.shape[-1] != cls.num_params:
            raise ValueError(f"Affine.from_raw_params needs raw_params of shape [..., D, {cls.num_params}]"
                             f" (dim-major, 2 raw values last), got shape {raw_params.shape}.")
        shift, v = tf.unstack(raw_params, num=cls.num_params, axis=-1)
        return cls(shift, 0.5 * v, validate_args=validate_args, name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict(shift=tfp.util.ParameterProperties(), log_scale=tfp.util.ParameterProperties())

    @property
    def shift(self):
        return self._shift

    @property
    def log_scale(self):
        return self._log_scale

    @classmethod
    def _is_increasing(cls):
        return True

    def _forward(self, x):
        return self._shift + tf.exp(self._log_scale) * x

    def _inverse(self, y):
        return (y - self._shift) * tf.exp(-self._log_scale)

    def _forward_log_det_jacobian(self, x):
        return self._log_scale + tf.zeros_like(x)

    def _inverse_log_det_jacobian(self, y):
        return -self._log_scale + tf.zeros_like(y)
