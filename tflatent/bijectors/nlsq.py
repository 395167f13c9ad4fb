"""The non-linear squared (NLSq) flow of Ziegler & Rush (2019), as a TFP bijector.

Data side z, noise side ε (TFP direction: ``forward`` = noise → data, ``inverse`` = data → noise)::

    ε = a + b·z + c / (1 + (d·z + g)²)                                  (inverse, closed form)
    ∂ε/∂z = b − 2·c·d·u / (1 + u²)²,   u = d·z + g                      (the slope, > 0)

The map is strictly increasing when |c| < (8√3/9)·b/d, because max_u |u/(1 + u²)²| = 3√3/16.
The parameterisation of ``from_raw_params`` (``docs/reference.md`` §2.4) enforces |c| < A·b/d with
A = 8√3/9 − 0.05, which keeps the slope ≥ 0.0325·b.

``forward`` (sampling) solves the cubic for z in float64 and casts back. Writing the cubic in
u = d·z + g and multiplying by d/b turns it into

    w = u + k / (1 + u²),    w = d·(ε − a)/b + g,   k = c·d/b,   |k| < 8√3/9,
    u³ − w·u² + u + (k − w) = 0,

the reference's cubic α z³ + β z² + γ z + δ = 0 up to the change of variable (it depends on two
numbers only, which keeps it well conditioned). With u = s + w/3 the depressed cubic
s³ + p·s + q = 0 has p = 1 − w²/3 and q = k − 2w/3 − 2w³/27, and exactly one real root:

    p > 0:  s = −2·√(p/3)·sinh(⅓·asinh(3q/(2p)·√(3/p)))
    p < 0:  s = −2·sign(q)·√(−p/3)·cosh(⅓·acosh(|r − 1| + 1)),   r = 3|q|/(2|p|)·√(3/|p|) ≥ 1
    p = 0:  s = −∛q

(|q| ≥ 0.0488 wherever |p| is small, and r ≥ 1.014 whenever p < 0, so every branch is well
conditioned; the |r − 1| + 1 guard of the reference is kept.) Gradients through ``forward`` are
the implicit-function ones, exact on every branch, so sampling can be differentiated.

``solver`` (one of ``SOLVERS``) says where the root is computed:

* ``float64``: the closed form above in float64, cast back (the default wherever float64 exists).
* ``float32``: for TPUs, which have no float64. The same closed form in float32, then
  ``NEWTON_STEPS`` Newton steps on h(z) = a + b·z + c/(1 + (d·z + g)²) − ε in float32. The slope
  h' ≥ 0.0325·b under the bound on c, so the steps converge quadratically from the closed form's
  float32 start (and repair the digits z = (u − g)/d loses when u ≈ g); the result round-trips as
  ``inverse(forward(ε)) = ε`` to ``FLOAT32_ROUND_TRIP`` · (1 + |ε| + |a| + |c|) (tests/bijectors/test_nlsq.py
  checks it over the raw parameters ``from_raw_params`` allows, near-degenerate ones included).
* ``auto``: ``float32`` inside a ``TPUStrategy``, else ``float64``.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util, parameter_properties

tfb = tfp.bijectors

__all__ = ["NLSq"]

# Bound of |c|·d/b: below 8√3/9 the map is monotone, the 0.05 keeps the slope away from 0 (§2.4).
MONOTONE_C_BOUND = 8.0 * np.sqrt(3.0) / 9.0
NLSQ_C_BOUND = MONOTONE_C_BOUND - 0.05
SOLVERS = ("auto", "float64", "float32")
NEWTON_STEPS = 2
# inverse(forward(ε)) − ε of the float32 solver, relative to 1 + |ε| + |a| + |c| (the float32
# rounding of evaluating ε = a + b·z + c/(1 + u²) is already ~1e−7 of that).
FLOAT32_ROUND_TRIP = 1e-6
# Below this |p| the depressed cubic is solved as s³ + q = 0; the neglected term shifts s by
# |p|/(3∛q²) < 1e-13 relative, because |q| > 0.048 there.
_P_ZERO = 1e-14


@tf.custom_gradient
def _depressed_cubic_root(p, q):
    """The real root s of s³ + p·s + q = 0 when it has only one (float64; see the module docstring).

    p and q have the same shape. Every branch is evaluated on safe inputs, so the unused ones
    produce no NaN or inf. The gradient is the implicit one, ∂s/∂(p, q) = −(s, 1)/(3s² + p), which
    is exact on every branch; for an NLSq map 3s² + p = (1 + u²)·(∂ε/∂z)·d/b > 0.
    """
    positive = p > _P_ZERO
    negative = p < -_P_ZERO
    p_pos = tf.where(positive, p, tf.ones_like(p))
    p_neg = tf.where(negative, -p, tf.ones_like(p))  # |p| on the p < 0 branch

    sinh_root = -2.0 * tf.sqrt(p_pos / 3.0) * tf.sinh(
        tf.asinh(3.0 * q / (2.0 * p_pos) * tf.sqrt(3.0 / p_pos)) / 3.0)
    r = 3.0 * tf.abs(q) / (2.0 * p_neg) * tf.sqrt(3.0 / p_neg)
    cosh_root = -2.0 * tf.sign(q) * tf.sqrt(p_neg / 3.0) * tf.cosh(
        tf.acosh(tf.abs(r - 1.0) + 1.0) / 3.0)
    cbrt_root = -tf.sign(q) * tf.pow(tf.abs(q), 1.0 / 3.0)
    s = tf.where(positive, sinh_root, tf.where(negative, cosh_root, cbrt_root))

    def grad(ds):
        scaled = -ds / (3.0 * tf.square(s) + p)
        return scaled * s, scaled

    return s, grad


def _newton(z, eps, a, b, c, d, g):
    """``NEWTON_STEPS`` Newton steps on h(z) = a + b·z + c/(1 + (d·z + g)²) − ε from z (the float32 solver).

    The steps are in z, not in u = d·z + g: going back from u to z cancels digits when u ≈ g, which
    the steps repair. They are taken without gradient; the gradient of z is that of the closed form,
    the implicit one (``_depressed_cubic_root``), which the steps do not change.
    """
    start = z
    z = tf.stop_gradient(z)
    for _ in range(NEWTON_STEPS):
        u = d * z + g
        v = 1.0 + tf.square(u)
        residual = a + b * z + c / v - eps
        slope = b - 2.0 * c * d * u / tf.square(v)
        z = z - tf.stop_gradient(residual / slope)
    return start + tf.stop_gradient(z - start)


class NLSq(tfb.AutoCompositeTensorBijector):
    """Elementwise NLSq flow: ``inverse`` ε = a + b·z + c/(1 + (d·z + g)²), ``forward`` its inverse.

    All parameters broadcast against each other and against the input; their common dtype
    (float32 or float64) is the bijector's dtype. ``inverse`` and its log-det run in that dtype with
    no epsilon or clamp inside the log of the slope; ``forward`` runs in float64 and casts back.

    Log-det Jacobians (per element; TFP sums them over the event dims):
      ``inverse_log_det_jacobian(z)`` = log(∂ε/∂z) = log(b − 2cd·u/(1 + u²)²),
      ``forward_log_det_jacobian(ε)`` = −log(∂ε/∂z) at z = forward(ε).

    Build it from network outputs with ``NLSq.from_raw_params``.
    """

    num_params = 5

    def __init__(self, a, b, c, d, g, solver="auto", validate_args=False, name="nlsq"):
        """Creates the bijector from constrained parameters.

        Args:
          a: shift, any real.
          b: linear slope, > 0.
          c: amplitude of the squared term, |c| < (8√3/9)·b/d for invertibility.
          d: scale of the squared term's argument, > 0.
          g: offset of the squared term's argument (f in docs/reference.md §2.4), any real.
          solver: how ``forward`` solves the cubic: "float64", "float32" or "auto" (module docstring).
          validate_args: check b > 0, d > 0 and the bound on |c| at run time.
          name: name scope of the ops.
        """
        parameters = dict(locals())
        if solver not in SOLVERS:
            raise ValueError(f"NLSq solver={solver!r} is not allowed; choose one of {SOLVERS}")
        self._solver = solver
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([a, b, c, d, g], dtype_hint=tf.float32)
            self._a = tf.convert_to_tensor(a, dtype=dtype, name="a")
            self._b = tf.convert_to_tensor(b, dtype=dtype, name="b")
            self._c = tf.convert_to_tensor(c, dtype=dtype, name="c")
            self._d = tf.convert_to_tensor(d, dtype=dtype, name="d")
            self._g = tf.convert_to_tensor(g, dtype=dtype, name="g")
            super().__init__(forward_min_event_ndims=0, dtype=dtype, validate_args=validate_args,
                             parameters=parameters, name=name)

    @classmethod
    def from_raw_params(cls, raw_params, solver="auto", validate_args=False, name="nlsq"):
        """Creates the bijector from unconstrained network outputs (``docs/reference.md`` §2.4).

        Args:
          raw_params: `[..., D, 5]`, dim-major: ``raw_params[..., i, :]`` = (r0..r4) of dimension i.
            a = r0, b = exp(0.4·r1), c = tanh(0.3·r2)·A·b/d with A = 8√3/9 − 0.05,
            d = exp(0.4·r3), g = r4.
        """
        raw_params = tf.convert_to_tensor(raw_params)
        if raw_params.shape[-1] != cls.num_params:
            raise ValueError(f"NLSq.from_raw_params needs raw_params of shape [..., D, {cls.num_params}]"
                             f" (dim-major, 5 raw values last), got shape {raw_params.shape}.")
        r0, r1, r2, r3, r4 = tf.unstack(raw_params, num=cls.num_params, axis=-1)
        log_b = 0.4 * r1
        log_d = 0.4 * r3
        c = tf.tanh(0.3 * r2) * tf.exp(np.log(NLSQ_C_BOUND) + log_b - log_d)
        return cls(r0, tf.exp(log_b), c, tf.exp(log_d), r4, solver=solver, validate_args=validate_args, name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        def positive():
            return tfb.Softplus(low=dtype_util.eps(dtype))
        return dict(
            a=tfp.util.ParameterProperties(),
            b=tfp.util.ParameterProperties(default_constraining_bijector_fn=positive),
            c=tfp.util.ParameterProperties(
                default_constraining_bijector_fn=parameter_properties.BIJECTOR_NOT_IMPLEMENTED),
            d=tfp.util.ParameterProperties(default_constraining_bijector_fn=positive),
            g=tfp.util.ParameterProperties())

    @property
    def solver(self):
        """"float64" or "float32": the precision ``forward`` solves the cubic in ("auto" resolved)."""
        if self._solver != "auto":
            return self._solver
        return "float32" if isinstance(tf.distribute.get_strategy(), tf.distribute.TPUStrategy) else "float64"

    @property
    def a(self):
        return self._a

    @property
    def b(self):
        return self._b

    @property
    def c(self):
        return self._c

    @property
    def d(self):
        return self._d

    @property
    def g(self):
        return self._g

    @classmethod
    def _is_increasing(cls):
        return True

    def _log_slope(self, z):
        """log ∂ε/∂z at z."""
        u = self._d * z + self._g
        return tf.math.log(self._b - 2.0 * self._c * self._d * u / tf.square(1.0 + tf.square(u)))

    def _inverse(self, y):
        return self._a + self._b * y + self._c / (1.0 + tf.square(self._d * y + self._g))

    def _inverse_log_det_jacobian(self, y):
        return self._log_slope(y)

    def _forward(self, x):
        dtype = tf.float64 if self.solver == "float64" else tf.float32
        eps, a, b, c, d, g = (tf.cast(t, dtype) for t in (x, self._a, self._b, self._c, self._d, self._g))
        w = d * (eps - a) / b + g
        k = c * d / b
        p = 1.0 - tf.square(w) / 3.0
        q = k - 2.0 * w / 3.0 - 2.0 * w ** 3 / 27.0
        shape = tf.broadcast_dynamic_shape(tf.shape(p), tf.shape(q))
        u = _depressed_cubic_root(tf.broadcast_to(p, shape), tf.broadcast_to(q, shape)) + w / 3.0
        z = (u - g) / d
        if dtype == tf.float32:
            z = _newton(z, eps, a, b, c, d, g)
        return tf.cast(z, x.dtype)

    def _forward_log_det_jacobian(self, x):
        return -self._log_slope(self.forward(x))

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        return [
            tf.debugging.assert_positive(self._b, message="NLSq needs b > 0."),
            tf.debugging.assert_positive(self._d, message="NLSq needs d > 0."),
            tf.debugging.assert_less(
                tf.abs(self._c) * self._d, MONOTONE_C_BOUND * self._b,
                message="NLSq needs |c| < (8√3/9)·b/d to be invertible; build it with "
                        "NLSq.from_raw_params to get that by construction."),
        ]
