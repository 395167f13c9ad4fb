"""The within-timestep ("hidden") flow: an H-vector z_t ↔ noise ε_t, conditioned on a context h̃_t.

``docs/reference.md`` §2.3–2.9. Each of ``num_layers`` layers is an elementwise transform
(`NLSq`, or `Affine` for the ablation) whose parameters come from a conditioner:

  "af"    MADE on the layer's data-side input and the context: ``tfb.MaskedAutoregressiveFlow``.
          Layer k uses input order 1..D for even k and D..1 for odd k (through the MADE's
          ``input_order``, so no permutation op is needed).
  "scf"   coupling: ``tfb.RealNVP``; an MLP on the kept half and the context parametrises the other
          half. Even layers keep the first ⌊D/2⌋ dims (``num_masked = ⌊D/2⌋``), odd layers the last
          ⌊D/2⌋ (``num_masked = −⌊D/2⌋``, which TFP reads as "the last dims"), i.e. the dims of order
          ≤ ⌊D/2⌋ under the same alternating order. The kept half passes through with its gradient
          (the reference's PyTorch ≥ 1.0 detach, docs/reference.md §2.6, is not reproduced).
  "none"  one elementwise transform whose parameters are a Dense layer of the context only
          (the reference's ``--nohiddenflow``; ``num_layers``, ``hidden_layers`` and
          ``hidden_units`` are unused).

Directions as in TFP: ``forward`` = noise → data (sampling), ``inverse`` = data → noise (density).
Layer 0 is the first one applied to the data z in the density direction, as in the reference::

    ε = f_{L−1}⁻¹ ∘ … ∘ f_0⁻¹ (z),     log p(z | h̃) = Σ_d log N(ε_d; 0, 1) + log|det ∂ε/∂z|

``inverse`` (and so ``log_prob``) evaluates each layer's conditioner once, so ε and its log-det
share one set of parameters (and one dropout mask in training); it equals
``bijector(context).inverse`` and its ``inverse_log_det_jacobian``, which evaluate the
conditioner twice. ``forward`` samples as ``bijector(context).forward`` does and gets its log-det
as −log|det ∂ε/∂z| at the sampled z. For "af" it runs its own loop over the D dims (see
``_af_forward``): one MADE pass per dim on the pre-projected context, as TFP's MAF, but the transform
(NLSq's cubic) is solved for the one dim that the pass determines instead of for all D.
"""

import math

import numpy as np

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tflatent.bijectors import TRANSFORMS
from tflatent.layers import MADE, CouplingConditioner
from tflatent.layers.initializers import uniform

tfb = tfp.bijectors

KINDS = ("af", "scf", "none")


def standard_normal_log_prob(eps):
    """Σ_d log N(ε_d; 0, 1) over the last axis."""
    return -0.5 * tf.reduce_sum(tf.square(eps) + math.log(2.0 * math.pi), axis=-1)


@keras.saving.register_keras_serializable(package="tflatent")
class HiddenFlow(keras.layers.Layer):
    """Conditional flow over `[..., dim]` vectors given a context `[..., context_dim]`.

    Leading dims are arbitrary (e.g. `[S, B, T]`) and broadcast between z (or ε) and the context.
    The context is passed explicitly to every call; with ``context_dim=0`` it may be omitted.

    Args:
      kind: "af", "scf" or "none" (see the module docstring).
      dim: D, the size of z_t.
      context_dim: C, the size of the context (0: unconditional).
      num_layers: number of flow layers ("af", "scf").
      hidden_layers, hidden_units: sizes of each conditioner's MLP ("af", "scf"); "af" needs
        hidden_units ≥ dim.
      transform: "nlsq" or "affine" (the "− NLSq" ablation).
      dropout: rate inside the "af"/"scf" conditioners, applied only when called with
        ``training=True`` (the reference's 'prior_ff' location, off by default).
      **kwargs: Keras layer arguments. The conditioners take this layer's dtype policy: under a
        mixed-precision global policy pass ``dtype="float32"``, since the NLSq log-slope has no
        epsilon and wants float32 (``dtype="float64"`` gives a float64 flow).
    """

    def __init__(self, kind, dim, context_dim, num_layers=5, hidden_layers=2, hidden_units=100,
                 transform="nlsq", dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"HiddenFlow kind={kind!r} is not one of {KINDS}.")
        if transform not in TRANSFORMS:
            raise ValueError(f"HiddenFlow transform={transform!r} is not one of {tuple(TRANSFORMS)}.")
        self.kind = kind
        self.dim = dim
        self.context_dim = context_dim
        self.num_layers = num_layers
        self.hidden_layers = hidden_layers
        self.hidden_units = hidden_units
        self.transform = transform
        self.dropout = dropout
        self._transform_class = TRANSFORMS[transform]
        num_params = self._transform_class.num_params
        half = dim // 2
        if kind == "af":
            self.conditioners = [
                MADE(list(range(1, dim + 1)) if k % 2 == 0 else list(range(dim, 0, -1)), num_params,
                     context_dim=context_dim, hidden_layers=hidden_layers, hidden_units=hidden_units,
                     dropout=dropout, dtype=self.dtype_policy, name=f"made_{k}")
                for k in range(num_layers)]
        elif kind == "scf":
            self.conditioners = [
                CouplingConditioner(half, dim - half, num_params, context_dim=context_dim,
                                    hidden_layers=hidden_layers, hidden_units=hidden_units, dropout=dropout,
                                    dtype=self.dtype_policy, name=f"coupling_{k}")
                for k in range(num_layers)]
            self._num_masked = [half if k % 2 == 0 else -half for k in range(num_layers)]
        else:
            init = uniform()
            self.conditioners = [keras.layers.Dense(dim * num_params, kernel_initializer=init,
                                                    dtype=self.dtype_policy, name="elementwise")]

    def build(self, input_shape=None):
        """Builds every conditioner from the constructor's sizes (``input_shape`` is not needed)."""
        for conditioner in self.conditioners:
            if conditioner.built:
                continue
            if self.kind == "none":
                conditioner.build((None, self.context_dim))
            else:
                conditioner.build()
        self.built = True

    def _context(self, context, batch_shape):
        """Checks the context; with context_dim = 0 an omitted one becomes `[*batch_shape, 0]`."""
        if context is None:
            if self.context_dim:
                raise ValueError(f"HiddenFlow {self.name!r} has context_dim={self.context_dim}: pass a "
                                 f"context of shape [..., {self.context_dim}].")
            return tf.zeros(tf.concat([batch_shape, [0]], axis=0), dtype=self.compute_dtype)
        context = tf.convert_to_tensor(context)
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"HiddenFlow {self.name!r} expects a context of shape "
                             f"[..., {self.context_dim}], got {context.shape}; set context_dim to the context's width.")
        return context

    def _check_event(self, x):
        x = tf.convert_to_tensor(x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"HiddenFlow {self.name!r} has dim={self.dim} but got an input of shape "
                             f"{x.shape}; the last axis must be {self.dim}.")
        return x

    def _layer_fns(self, context, training):
        """Per layer, the function from conditioner input to elementwise transform.

        "af": ``fn(y)`` with the layer's data-side input y `[..., D]` (TFP's ``bijector_fn``);
        "scf": ``fn(kept, num_transformed)`` (RealNVP's ``bijector_fn``); "none": ``fn()``.
        """
        if not self.built:
            self.build()
        transform = self._transform_class

        def af_fn(made):
            projected = made.project_context(context, training=training)  # once per call, not per dim
            return lambda y: transform.from_raw_params(made(y, projected, training=training))

        def scf_fn(coupling):
            def fn(kept, output_units):  # output_units = coupling.num_transformed, by construction
                return transform.from_raw_params(coupling(kept, context, training=training))
            return fn

        def none_fn(dense):
            def fn():
                raw = dense(context)
                return transform.from_raw_params(
                    tf.reshape(raw, tf.concat([tf.shape(raw)[:-1], [self.dim, transform.num_params]], 0)))
            return fn

        make = {"af": af_fn, "scf": scf_fn, "none": none_fn}[self.kind]
        return [make(conditioner) for conditioner in self.conditioners]

    def bijector(self, context=None, training=None):
        """The flow as a TFP bijector given the context `[..., C]`: forward = noise → data."""
        context = self._context(context, [1])
        fns = self._layer_fns(context, training)
        if self.kind == "none":
            return fns[0]()
        if self.kind == "af":
            layers = [tfb.MaskedAutoregressiveFlow(bijector_fn=fn, name=f"af_{k}")
                      for k, fn in enumerate(fns)]
        else:
            layers = [tfb.RealNVP(num_masked=masked, bijector_fn=fn, name=f"scf_{k}")
                      for k, (masked, fn) in enumerate(zip(self._num_masked, fns))]
        return tfb.Chain(layers, name=f"{self.kind}_flow")  # layers[0] acts first in `inverse`

    def inverse(self, z, context=None, training=None):
        """Density direction: z `[..., D]` → (ε `[..., D]`, log|det ∂ε/∂z| `[...]`)."""
        z = self._check_event(z)
        fns = self._layer_fns(self._context(context, tf.shape(z)[:-1]), training)
        if self.kind == "none":
            transform = fns[0]()
            return transform.inverse(z), transform.inverse_log_det_jacobian(z, event_ndims=1)
        eps, log_det = z, tf.zeros(tf.shape(z)[:-1], z.dtype)
        for k, fn in enumerate(fns):
            if self.kind == "af":
                transform = fn(eps)
                log_det += transform.inverse_log_det_jacobian(eps, event_ndims=1)
                eps = transform.inverse(eps)
            else:
                masked = self._num_masked[k]
                kept, rest = (eps[..., :masked], eps[..., masked:]) if masked >= 0 else \
                    (eps[..., masked:], eps[..., :masked])
                transform = fn(kept, self.dim - abs(masked))
                log_det += transform.inverse_log_det_jacobian(rest, event_ndims=1)
                rest = transform.inverse(rest)
                eps = tf.concat([kept, rest] if masked >= 0 else [rest, kept], axis=-1)
        return eps, log_det

    def forward(self, eps, context=None, training=None):
        """Sampling direction: ε `[..., D]` → (z `[..., D]`, log|det ∂z/∂ε| `[...]`)."""
        eps = self._check_event(eps)
        context = self._context(context, tf.shape(eps)[:-1])
        if self.kind == "af":
            z = self._af_forward(eps, context, training)
        else:
            z = self.bijector(context, training).forward(eps)
        _, inverse_log_det = self.inverse(z, context, training)
        return z, -inverse_log_det

    def _af_forward(self, eps, context, training):
        """ε → z through the AF layers (the last first), each inverted one dim per loop iteration.

        Equals ``bijector(context).forward(eps)``. TFP's MAF starts from y = 0 and repeats D times
        y ← f⁻¹(ε; MADE(y)) on all D dims; after iteration i the dims of order ≤ i + 1 are final. Here
        iteration i evaluates the same MADE pass on the same y (the entries not yet set are 0 there
        too, and masked out) and solves the transform only for the dim of order i + 1, whose
        parameters that pass determines: one cubic per iteration instead of D.
        """
        if not self.built:
            self.build()
        transform = self._transform_class
        positions = tf.range(self.dim)
        z = eps
        for made in reversed(self.conditioners):
            projected = made.project_context(context, training=training)  # once per layer, not per dim
            dims = tf.constant(np.argsort(made.input_order), tf.int32)  # the dims by increasing order
            noise = z

            def body(i, y, made=made, projected=projected, dims=dims, noise=noise):
                d = dims[i]
                raw = tf.gather(made(y, projected, training=training), [d], axis=-2)  # [..., 1, k]
                y_d = transform.from_raw_params(raw).forward(tf.gather(noise, [d], axis=-1))  # [..., 1]
                return i + 1, tf.where(tf.equal(positions, d), y_d, y)

            _, z = tf.while_loop(lambda i, _: i < self.dim, body, (tf.constant(0), tf.zeros_like(noise)),
                                 maximum_iterations=self.dim)
        return z

    def log_prob(self, z, context=None, training=None):
        """log p(z | context) `[...]` = Σ_d log N(ε_d; 0, 1) + log|det ∂ε/∂z|."""
        eps, log_det = self.inverse(z, context, training)
        return standard_normal_log_prob(eps) + log_det

    def call(self, z, context=None, training=None):
        """``log_prob``, so that the layer can be called like any Keras layer."""
        return self.log_prob(z, context, training)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "dim": self.dim, "context_dim": self.context_dim,
                "num_layers": self.num_layers, "hidden_layers": self.hidden_layers,
                "hidden_units": self.hidden_units, "transform": self.transform, "dropout": self.dropout}
