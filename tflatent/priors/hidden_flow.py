"""The within-timestep ("hidden") flow: an H-vector z_t ↔ noise ε_t, conditioned on a context h̃_t.

``docs/reference.md`` §2.3–2.9. Each of ``num_layers`` layers is an elementwise transform
(`NLSq`, or `Affine` for the ablation) whose parameters come from a conditioner. One class per
kind (the config's ``model.hidden_flow``; ``make_hidden_flow`` builds one from that name) on the base
``HiddenFlow``, which holds the shared part (argument checks, the forward log-det, ``log_prob``):

  "af"    ``AutoregressiveHiddenFlow``: MADE on the layer's data-side input and the context, as
          ``tfb.MaskedAutoregressiveFlow``.
          Layer k uses input order 1..D for even k and D..1 for odd k (through the MADE's
          ``input_order``, so no permutation op is needed).
  "scf"   ``CouplingHiddenFlow``: coupling as ``tfb.RealNVP``; an MLP on the kept half and the context
          parametrises the other
          half. Even layers keep the first ⌊D/2⌋ dims (``num_masked = ⌊D/2⌋``), odd layers the last
          ⌊D/2⌋ (``num_masked = −⌊D/2⌋``, which TFP reads as "the last dims"), i.e. the dims of order
          ≤ ⌊D/2⌋ under the same alternating order. The kept half passes through with its gradient
          (the reference's PyTorch ≥ 1.0 detach, docs/reference.md §2.6, is not reproduced).
  "none"  ``ElementwiseHiddenFlow``: one elementwise transform whose parameters are a Dense layer of
          the context only
          (the reference's ``--nohiddenflow``; ``num_layers``, ``hidden_layers`` and
          ``hidden_units`` are unused).

Directions as in TFP: ``forward`` = noise → data (sampling), ``inverse`` = data → noise (density).
Layer 0 is the first one applied to the data z in the density direction, as in the reference::

    ε = f_{L−1}⁻¹ ∘ … ∘ f_0⁻¹ (z),     log p(z | h̃) = Σ_d log N(ε_d; 0, 1) + log|det ∂ε/∂z|

Each class implements the two directions itself, and ``bijector(context)``, the same flow as a TFP
``Chain`` of ``MaskedAutoregressiveFlow`` / ``RealNVP`` layers, is the oracle its tests compare with.
``inverse`` (and so ``log_prob``) evaluates each layer's conditioner once, so ε and its log-det
share one set of parameters (and one dropout mask in training); it equals
``bijector(context).inverse`` and its ``inverse_log_det_jacobian``, which evaluate the
conditioner twice. ``forward`` equals ``bijector(context).forward`` and gets its log-det as
−log|det ∂ε/∂z| at the sampled z. For "af" it runs its own loop over the D dims (see
``AutoregressiveHiddenFlow._forward``): one MADE pass per dim on the pre-projected context, as TFP's
MAF, but the transform (NLSq's cubic) is solved for the one dim that the pass determines instead of
for all D.
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tflatent.bijectors import TRANSFORMS
from tflatent.layers import MADE, CouplingConditioner
from tflatent.layers.initializers import uniform

tfb = tfp.bijectors


def standard_normal_log_prob(eps):
    """Σ_d log N(ε_d; 0, 1) over the last axis."""
    return -0.5 * tf.reduce_sum(tf.square(eps) + math.log(2.0 * math.pi), axis=-1)


class HiddenFlow(keras.layers.Layer):
    """Base of the conditional flows over `[..., dim]` vectors given a context `[..., context_dim]`.

    Leading dims are arbitrary (e.g. `[S, B, T]`) and broadcast between z (or ε) and the context.
    The context is passed explicitly to every call; with ``context_dim=0`` it may be omitted.
    A subclass builds its conditioners in ``self.conditioners`` (layer 0 first in the density
    direction) and implements the hooks ``_inverse`` and ``_forward`` (on a checked event and
    context) and ``bijector``.

    Args:
      dim: D, the size of z_t.
      context_dim: C, the size of the context (0: unconditional).
      transform: "nlsq" or "affine" (the "− NLSq" ablation).
      **kwargs: Keras layer arguments. The conditioners take this layer's dtype policy: under a
        mixed-precision global policy pass ``dtype="float32"`` (``TimeFlowPrior`` does), since the
        NLSq log-slope has no epsilon and wants float32 (``dtype="float64"`` gives a float64 flow).
        The context is cast to the layer's compute dtype.
    """

    kind = None  # the config's name for the subclass (model.hidden_flow)

    def __init__(self, dim, context_dim, transform="nlsq", **kwargs):
        super().__init__(**kwargs)
        if transform not in TRANSFORMS:
            raise ValueError(f"HiddenFlow transform={transform!r} is not one of {tuple(TRANSFORMS)}.")
        self.dim = dim
        self.context_dim = context_dim
        self.transform = transform
        self._transform_class = TRANSFORMS[transform]

    def build(self, input_shape=None):
        """Builds every conditioner from the constructor's sizes (``input_shape`` is not needed)."""
        for conditioner in self.conditioners:
            if not conditioner.built:
                conditioner.build()
        self.built = True

    # ------------------------------------------------------------------ hooks
    def _inverse(self, z, context, training, weights=None):
        """z → (ε, log|det ∂ε/∂z|) on a checked z `[..., D]` and context `[..., C]`; ``weights`` from
        ``step_weights`` or None."""
        raise NotImplementedError

    def _forward(self, eps, context, training):
        """ε → z (without the log-det) on a checked ε and context."""
        raise NotImplementedError

    def bijector(self, context=None, training=None):
        """The flow as a TFP bijector given the context `[..., C]`: forward = noise → data."""
        raise NotImplementedError

    def step_weights(self):
        """The conditioners' weights in the compute dtype, for a loop that calls ``inverse`` at every step
        (the IAF density) to read once before it: a differentiated loop keeps every weight it reads
        inside the loop once per step for the gradient. None where ``inverse`` reads its variables
        itself (the "af" flow, which no differentiated loop steps)."""
        return None

    # ------------------------------------------------------------------ the two directions
    def inverse(self, z, context=None, training=None, weights=None):
        """Density direction: z `[..., D]` → (ε `[..., D]`, log|det ∂ε/∂z| `[...]`).

        ``weights``: ``step_weights()``, prepared once by a loop over steps, or None."""
        z = self._check_event(z)
        if not self.built:
            self.build()
        return self._inverse(z, self._context(context, tf.shape(z)[:-1]), training, weights)

    def forward(self, eps, context=None, training=None):
        """Sampling direction: ε `[..., D]` → (z `[..., D]`, log|det ∂z/∂ε| `[...]`)."""
        eps = self._check_event(eps)
        if not self.built:
            self.build()
        context = self._context(context, tf.shape(eps)[:-1])
        z = self._forward(eps, context, training)
        _, inverse_log_det = self._inverse(z, context, training)
        return z, -inverse_log_det

    def log_prob(self, z, context=None, training=None):
        """log p(z | context) `[...]` = Σ_d log N(ε_d; 0, 1) + log|det ∂ε/∂z|."""
        eps, log_det = self.inverse(z, context, training)
        return standard_normal_log_prob(eps) + log_det

    def call(self, z, context=None, training=None):
        """``log_prob``, so that the layer can be called like any Keras layer."""
        return self.log_prob(z, context, training)

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
                             f"[..., {self.context_dim}], got {context.shape}; set context_dim to the "
                             "context's width.")
        return tf.cast(context, self.compute_dtype)  # e.g. a mixed-precision LSTM's bfloat16 output

    def _check_event(self, x):
        x = tf.convert_to_tensor(x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"HiddenFlow {self.name!r} has dim={self.dim} but got an input of shape "
                             f"{x.shape}; the last axis must be {self.dim}.")
        return x

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "context_dim": self.context_dim,
                "transform": self.transform}


class _LayeredHiddenFlow(HiddenFlow):
    """A stack of ``num_layers`` conditioned layers, each an MLP of ``hidden_layers`` × ``hidden_units``.

    Args (besides ``HiddenFlow``'s):
      num_layers: number of flow layers.
      hidden_layers, hidden_units: sizes of each conditioner's MLP.
      dropout: rate inside the conditioners, applied only when called with ``training=True`` (the
        reference's 'prior_ff' location, off by default); kept as ``dropout_rate``.
    """

    def __init__(self, dim, context_dim, num_layers=5, hidden_layers=2, hidden_units=100, transform="nlsq",
                 dropout=0.0, **kwargs):
        super().__init__(dim, context_dim, transform=transform, **kwargs)
        self.num_layers = num_layers
        self.hidden_layers = hidden_layers
        self.hidden_units = hidden_units
        self.dropout_rate = dropout

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers, "hidden_layers": self.hidden_layers,
                "hidden_units": self.hidden_units, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="tflatent")
class AutoregressiveHiddenFlow(_LayeredHiddenFlow):
    """"af": MADE conditioners (``tfb.MaskedAutoregressiveFlow``); layer k uses input order 1..D for even
    k and D..1 for odd k. Needs hidden_units ≥ dim."""

    kind = "af"

    def __init__(self, dim, context_dim, **kwargs):
        super().__init__(dim, context_dim, **kwargs)
        self.conditioners = [
            MADE(list(range(1, dim + 1)) if k % 2 == 0 else list(range(dim, 0, -1)),
                 self._transform_class.num_params, context_dim=context_dim, hidden_layers=self.hidden_layers,
                 hidden_units=self.hidden_units, dropout=self.dropout_rate, dtype=self.dtype_policy,
                 name=f"made_{k}")
            for k in range(self.num_layers)]

    def _layer_fn(self, made, context, training):
        """y `[..., D]` (the layer's data-side input) → its elementwise transform (TFP's ``bijector_fn``)."""
        projected = made.project_context(context, training=training)  # once per call, not per dim
        transform = self._transform_class
        return lambda y: transform.from_raw_params(made(y, projected, training=training))

    def _inverse(self, z, context, training, weights=None):
        eps, log_det = z, tf.zeros(tf.shape(z)[:-1], z.dtype)
        for made in self.conditioners:
            transform = self._layer_fn(made, context, training)(eps)
            log_det += transform.inverse_log_det_jacobian(eps, event_ndims=1)
            eps = transform.inverse(eps)
        return eps, log_det

    def _forward(self, eps, context, training):
        """ε → z through the layers (the last first), each inverted one dim per loop iteration.

        Equals ``bijector(context).forward(eps)``. TFP's MAF starts from y = 0 and repeats D times
        y ← f⁻¹(ε; MADE(y)) on all D dims; after iteration i the dims of order ≤ i + 1 are final. Here
        iteration i evaluates the same MADE pass on the same y (the entries not yet set are 0 there
        too, and masked out) and solves the transform only for the dim of order i + 1, whose
        parameters that pass determines: one cubic per iteration instead of D.
        """
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

    def bijector(self, context=None, training=None):
        if not self.built:
            self.build()
        context = self._context(context, [1])
        return tfb.Chain([tfb.MaskedAutoregressiveFlow(bijector_fn=self._layer_fn(made, context, training),
                                                       name=f"af_{k}")
                          for k, made in enumerate(self.conditioners)],
                         name="af_flow")  # layers[0] acts first in `inverse`


@keras.saving.register_keras_serializable(package="tflatent")
class CouplingHiddenFlow(_LayeredHiddenFlow):
    """"scf": coupling layers (``tfb.RealNVP``). Even layers keep the first ⌊D/2⌋ dims (RealNVP's
    ``num_masked = ⌊D/2⌋``), odd layers the last ⌊D/2⌋ (``num_masked = −⌊D/2⌋``, which TFP reads as
    "the last dims"); an MLP on the kept half and the context parametrises the transform of the rest,
    and the kept half passes through with its gradient. Needs dim ≥ 2."""

    kind = "scf"

    def __init__(self, dim, context_dim, **kwargs):
        super().__init__(dim, context_dim, **kwargs)
        half = dim // 2
        self.conditioners = [
            CouplingConditioner(half, dim - half, self._transform_class.num_params, context_dim=context_dim,
                                hidden_layers=self.hidden_layers, hidden_units=self.hidden_units,
                                dropout=self.dropout_rate, dtype=self.dtype_policy, name=f"coupling_{k}")
            for k in range(self.num_layers)]
        self._num_masked = [half if k % 2 == 0 else -half for k in range(self.num_layers)]

    def _layer_fn(self, coupling, context, training, weights=None):
        """(kept, num_transformed) → the transform of the other dims (RealNVP's ``bijector_fn``)."""
        transform = self._transform_class

        def fn(kept, output_units):  # output_units = coupling.num_transformed, by construction
            return transform.from_raw_params(coupling(kept, context, training=training, weights=weights))
        return fn

    def step_weights(self):
        return [coupling.step_weights() for coupling in self.conditioners]

    @staticmethod
    def _split(x, masked):
        """(kept, rest): the first ``masked`` dims and the others, or for masked < 0 the last −masked."""
        return (x[..., :masked], x[..., masked:]) if masked >= 0 else (x[..., masked:], x[..., :masked])

    @staticmethod
    def _join(kept, rest, masked):
        return tf.concat([kept, rest] if masked >= 0 else [rest, kept], axis=-1)

    def _inverse(self, z, context, training, weights=None):
        eps, log_det = z, tf.zeros(tf.shape(z)[:-1], z.dtype)
        for k, (coupling, masked) in enumerate(zip(self.conditioners, self._num_masked)):
            kept, rest = self._split(eps, masked)
            layer_weights = None if weights is None else weights[k]
            transform = self._layer_fn(coupling, context, training, layer_weights)(kept, self.dim - abs(masked))
            log_det += transform.inverse_log_det_jacobian(rest, event_ndims=1)
            eps = self._join(kept, transform.inverse(rest), masked)
        return eps, log_det

    def _forward(self, eps, context, training):
        z = eps
        for coupling, masked in zip(reversed(self.conditioners), reversed(self._num_masked)):
            kept, rest = self._split(z, masked)
            transform = self._layer_fn(coupling, context, training)(kept, self.dim - abs(masked))
            z = self._join(kept, transform.forward(rest), masked)
        return z

    def bijector(self, context=None, training=None):
        if not self.built:
            self.build()
        context = self._context(context, [1])
        layers = [tfb.RealNVP(num_masked=masked, bijector_fn=self._layer_fn(coupling, context, training),
                              name=f"scf_{k}")
                  for k, (coupling, masked) in enumerate(zip(self.conditioners, self._num_masked))]
        return tfb.Chain(layers, name="scf_flow")  # layers[0] acts first in `inverse`


@keras.saving.register_keras_serializable(package="tflatent")
class ElementwiseHiddenFlow(HiddenFlow):
    """"none": one elementwise transform whose parameters are a Dense layer (U(±0.07)) of the context
    only: the dims of z_t are independent given h̃_t (the reference's ``--nohiddenflow``)."""

    kind = "none"

    def __init__(self, dim, context_dim, transform="nlsq", **kwargs):
        super().__init__(dim, context_dim, transform=transform, **kwargs)
        self.conditioners = [keras.layers.Dense(dim * self._transform_class.num_params,
                                                kernel_initializer=uniform(), dtype=self.dtype_policy,
                                                name="elementwise")]

    def build(self, input_shape=None):
        if not self.conditioners[0].built:
            self.conditioners[0].build((None, self.context_dim))
        self.built = True

    def _transform(self, context, weights=None):
        """The elementwise transform of every dim, from the context (``weights``: ``step_weights``)."""
        transform = self._transform_class
        if weights is None:
            raw = self.conditioners[0](context)
        else:
            kernel, bias = weights
            raw = tf.matmul(context, kernel) + bias
        return transform.from_raw_params(
            tf.reshape(raw, tf.concat([tf.shape(raw)[:-1], [self.dim, transform.num_params]], 0)))

    def step_weights(self):
        dense = self.conditioners[0]
        return tf.cast(dense.kernel, self.compute_dtype), tf.cast(dense.bias, self.compute_dtype)

    def _inverse(self, z, context, training, weights=None):
        transform = self._transform(context, weights)
        return transform.inverse(z), transform.inverse_log_det_jacobian(z, event_ndims=1)

    def _forward(self, eps, context, training):
        return self._transform(context).forward(eps)

    def bijector(self, context=None, training=None):
        if not self.built:
            self.build()
        return self._transform(self._context(context, [1]))


# Keys: tflatent.config.HIDDEN_FLOWS.
HIDDEN_FLOWS = {cls.kind: cls
                for cls in (AutoregressiveHiddenFlow, CouplingHiddenFlow, ElementwiseHiddenFlow)}


def make_hidden_flow(kind, dim, context_dim, num_layers=5, hidden_layers=2, hidden_units=100,
                     transform="nlsq", dropout=0.0, **kwargs):
    """The hidden flow the config's ``model.hidden_flow`` names ("af", "scf" or "none").

    "none" has no layers of its own: ``num_layers``, ``hidden_layers``, ``hidden_units`` and
    ``dropout`` apply to "af" and "scf" only. ``kwargs``: Keras layer arguments (name, dtype).
    """
    if kind not in HIDDEN_FLOWS:
        raise ValueError(f"hidden flow kind={kind!r} is not one of {tuple(HIDDEN_FLOWS)} "
                         "(config: model.hidden_flow)")
    if kind == "none":
        return ElementwiseHiddenFlow(dim, context_dim, transform=transform, **kwargs)
    return HIDDEN_FLOWS[kind](dim, context_dim, num_layers=num_layers, hidden_layers=hidden_layers,
                              hidden_units=hidden_units, transform=transform, dropout=dropout, **kwargs)
